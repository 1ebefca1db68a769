//! Gate saturation: how many gate units sit near 0 or 1, where a sigmoid's
//! gradient vanishes.

use serde::{Deserialize, Serialize};
use unrolled_autograd::{Error, Float, Graph, NodeId, Result};

use crate::wrappers::Unrolled;

/// Gate saturation: the fraction of a gate's units below `low` or above `high`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saturation {
    /// The fraction of units below `low`.
    pub low: f64,
    /// The fraction of units above `high`.
    pub high: f64,
}

/// The saturation of gate activations (nodes of any shape, values in [0, 1]).
///
/// # Errors
/// [`Error::ForeignNode`] for a node of another graph.
pub fn saturation<T: Float>(g: &Graph<T>, gates: &[NodeId], low: f64, high: f64) -> Result<Saturation> {
    let (mut lo, mut hi, mut n) = (0usize, 0usize, 0usize);
    for &id in gates {
        for v in g.value(id)?.iter().map(|v| v.f64()) {
            n += 1;
            lo += (v < low) as usize;
            hi += (v > high) as usize;
        }
    }
    let n = n.max(1) as f64;
    Ok(Saturation { low: lo as f64 / n, high: hi as f64 / n })
}

/// The taps that are sigmoid gates: an LSTM's input, forget and output gates
/// (`i f o`), a GRU's reset and update gates (`r z`).
pub const SIGMOID_GATES: [&str; 5] = ["i", "f", "o", "r", "z"];

/// The saturation of one gate over an unrolled run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateSaturation {
    /// The tap's name (`f`, `z`, …).
    pub gate: String,
    /// Over every step and unit.
    pub total: Saturation,
    /// Per step, in time order.
    pub per_step: Vec<Saturation>,
}

/// The saturation of every sigmoid gate ([`SIGMOID_GATES`]) among the taps of an
/// unrolled cell, whose names are `tap_names` ([`crate::Cell::tap_names`]): the
/// fraction of units below `eps` and above `1 - eps`, over the run and per step.
///
/// ```
/// use unrolled_autograd::{Graph, ParamStore};
/// use unrolled_layers::diagnostics::gate_saturation;
/// use unrolled_layers::{split_steps, unroll, Cell, Gru, GruVariant, Init, UnrollOptions};
/// # fn main() -> unrolled_autograd::Result<()> {
/// let gru = Gru::new("gru.", 0, false, 2, 3, GruVariant::Torch);
/// let mut p = ParamStore::<f64>::new();
/// unrolled_layers::init_params(&<Gru as Cell<f64>>::params(&gru), &mut p, &Init::torch(0));
/// let mut g = Graph::new();
/// let x = g.input(ndarray::ArrayD::zeros(vec![4, 1, 2]));
/// let xs = split_steps(&mut g, x)?;
/// let run = unroll(&gru, &mut g, &p, &xs, None, UnrollOptions::default())?;
/// let sat = gate_saturation(&g, &run, <Gru as Cell<f64>>::tap_names(&gru), 0.05)?;
/// assert_eq!(sat.iter().map(|s| s.gate.as_str()).collect::<Vec<_>>(), ["r", "z"]);
/// assert_eq!(sat[0].per_step.len(), 4);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for `eps` outside `(0, 0.5)` or a step without the
/// tap; [`Error::ForeignNode`] for taps of another graph.
pub fn gate_saturation<T: Float>(
    g: &Graph<T>,
    run: &Unrolled,
    tap_names: &[&str],
    eps: f64,
) -> Result<Vec<GateSaturation>> {
    if !(eps > 0.0 && eps < 0.5) {
        return Err(Error::InvalidInput {
            op: "gate_saturation",
            scope: g.scope_path(),
            reason: format!("eps must be in (0, 0.5), got {eps}"),
            shapes: vec![],
        });
    }
    let mut out = Vec::new();
    for (k, name) in tap_names.iter().enumerate() {
        if !SIGMOID_GATES.contains(name) {
            continue;
        }
        let nodes: Vec<NodeId> = run
            .taps
            .iter()
            .enumerate()
            .map(|(t, taps)| {
                taps.get(k).copied().ok_or_else(|| Error::InvalidInput {
                    op: "gate_saturation",
                    scope: g.scope_path(),
                    reason: format!("step {t} has {} taps; tap {k} ({name}) is missing", taps.len()),
                    shapes: vec![],
                })
            })
            .collect::<Result<_>>()?;
        let per_step = nodes.iter().map(|&n| saturation(g, &[n], eps, 1.0 - eps)).collect::<Result<_>>()?;
        let total = saturation(g, &nodes, eps, 1.0 - eps)?;
        out.push(GateSaturation { gate: (*name).to_string(), total, per_step });
    }
    Ok(out)
}
