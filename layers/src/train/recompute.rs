//! Full backpropagation through time in O(√T) memory (gradient checkpointing).
//!
//! The sequence is cut into segments of `segment` steps. The forward pass runs the
//! segments in order and keeps only the state each one starts from. The backward
//! pass then takes the segments newest first: it recomputes the segment's forward
//! pass from its stored state and differentiates it, seeded with the gradient that
//! reached the segment's final state from the segments after it. Nothing is
//! truncated: the gradients are those of full BPTT, computed with one segment's
//! graph in memory at a time (with `segment ≈ √T`, memory grows as √T), for about
//! one extra forward pass of time.
//!
//! A segment's graph is recorded once and replayed for every segment of its length
//! (at most two lengths: `segment` and the remainder).

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis, IxDyn, Slice};
use unrolled_autograd::{Error, Float, Graph, NodeId, ParamStore, Result};

use crate::models::AnyRecurrent;
use crate::wrappers::RunOptions;

/// What one step of [`recomputed_bptt`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct RecomputedStep<T> {
    /// The loss: the sum of the segments' losses.
    pub loss: f64,
    /// The gradient of the loss for every parameter the model reads.
    pub grads: BTreeMap<String, ArrayD<T>>,
    /// The final state (`[h_n]` or `[h_n, c_n]`), to carry into the next sequence.
    pub final_state: Vec<ArrayD<T>>,
}

/// A segment's loss: `(graph, output, target slice) -> scalar`.
type LossFn<'a, T> = dyn FnMut(&mut Graph<T>, NodeId, Option<NodeId>) -> Result<NodeId> + 'a;

/// The recorded graph of one segment length.
struct Segment<T: Float> {
    g: Graph<T>,
    len: usize,
    x: NodeId,
    target: Option<NodeId>,
    state_in: Vec<NodeId>,
    seed_in: Vec<NodeId>,
    final_state: Vec<NodeId>,
    loss: NodeId,
    forward_nodes: usize,
    param_grads: Vec<(String, NodeId)>,
    state_grads: Vec<NodeId>,
}

/// Sizes a state of `model` for a batch of `batch`: `[L*D, B, H]` per part.
fn state_shapes(model: &AnyRecurrent, batch: usize) -> Vec<Vec<usize>> {
    let c = model.config();
    let shape = vec![c.num_layers * c.directions(), batch, c.hidden_size];
    vec![shape; model.state_parts()]
}

impl<T: Float> Segment<T> {
    fn record(
        model: &AnyRecurrent,
        p: &ParamStore<T>,
        x: ArrayD<T>,
        target: Option<ArrayD<T>>,
        shapes: &[Vec<usize>],
        loss_fn: &mut LossFn<'_, T>,
    ) -> Result<Self> {
        let len = x.shape()[0];
        let mut g = Graph::new();
        let xi = g.input_named("x", x);
        let ti = target.map(|t| g.input_named("target", t));
        let state_in: Vec<NodeId> = {
            let mut g = g.scope("segment_start");
            shapes.iter().map(|s| g.input(ArrayD::zeros(IxDyn(s)))).collect()
        };
        let out = model.forward(&mut g, p, xi, Some(&state_in), RunOptions::default())?;
        let loss = loss_fn(&mut g, out.output, ti)?;
        let forward_nodes = g.len();
        // The gradient reaching the final state from later segments enters as a seed:
        // total = loss + Σ_k <final_k, seed_k>.
        let (seed_in, total) = {
            let mut g = g.scope("segment_end");
            let mut total = loss;
            let mut seeds = Vec::new();
            for (k, &f) in out.final_state.iter().enumerate() {
                let s = g.input(ArrayD::zeros(IxDyn(&shapes[k])));
                let m = g.mul(f, s)?;
                let m = g.sum_all(m)?;
                total = g.add(total, m)?;
                seeds.push(s);
            }
            (seeds, total)
        };
        let names: Vec<(String, NodeId)> = g.params().iter().map(|(k, &v)| (k.clone(), v)).collect();
        let wrt: Vec<NodeId> = names.iter().map(|(_, id)| *id).chain(state_in.iter().copied()).collect();
        let grads = g.grad(total, &wrt)?;
        let param_grads = names.iter().map(|(k, _)| k.clone()).zip(grads.iter().copied()).collect();
        let state_grads = grads[names.len()..].to_vec();
        Ok(Segment {
            g,
            len,
            x: xi,
            target: ti,
            state_in,
            seed_in,
            final_state: out.final_state,
            loss,
            forward_nodes,
            param_grads,
            state_grads,
        })
    }
}

fn invalid(reason: String, shapes: Vec<Vec<usize>>) -> Error {
    Error::InvalidInput { op: "recomputed_bptt", scope: "<root>".into(), reason, shapes }
}

/// One full-BPTT training step of `model` over `x` (`[T, B, I]`) from `init` (zeros
/// when `None`), holding at most `segment` steps' graph in memory (see the module
/// docs). `loss(g, output, target)` records a segment's loss from its output
/// `[len, B, D*H]` and its slice of `targets` (`[T, ...]`, sliced along axis 0 as
/// `x` is); the step's loss is the sum over segments, so a mean over the whole
/// sequence divides by the whole sequence's size. A segment's graph is recorded
/// once per segment length and replayed, so the loss may read only the output, the
/// target and constants that are the same for every segment.
///
/// ```
/// use ndarray::ArrayD;
/// use unrolled_layers::{recomputed_bptt, AnyRecurrent, CellKind, RecurrentConfig};
/// use unrolled_autograd::ParamStore;
/// # fn main() -> unrolled_autograd::Result<()> {
/// let m = AnyRecurrent::new(CellKind::Lstm, "lstm.", RecurrentConfig::new(2, 3));
/// let mut p = ParamStore::<f64>::new();
/// unrolled_layers::init_params(&m.params::<f64>(), &mut p, &unrolled_layers::Init::torch(0));
/// let x = ArrayD::from_elem(ndarray::IxDyn(&[9, 1, 2]), 0.5);
/// let step = recomputed_bptt(&m, &p, &x, None, None, 3, |g, y, _| g.sum_all(y))?;
/// assert_eq!(step.grads.len(), 4);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for `segment = 0`, an empty sequence or a wrong number of
/// state parts; the model's and the loss's errors.
pub fn recomputed_bptt<T: Float>(
    model: &AnyRecurrent,
    p: &ParamStore<T>,
    x: &ArrayD<T>,
    targets: Option<&ArrayD<T>>,
    init: Option<&[ArrayD<T>]>,
    segment: usize,
    mut loss: impl FnMut(&mut Graph<T>, NodeId, Option<NodeId>) -> Result<NodeId>,
) -> Result<RecomputedStep<T>> {
    let steps = x.shape().first().copied().unwrap_or(0);
    if segment == 0 || steps == 0 || x.ndim() != 3 {
        return Err(invalid(
            format!("needs x [T, B, I] with T > 0 and segment > 0 (segment {segment})"),
            vec![x.shape().to_vec()],
        ));
    }
    let shapes = state_shapes(model, x.shape()[1]);
    let mut state: Vec<ArrayD<T>> = match init {
        Some(s) if s.len() != shapes.len() => {
            return Err(invalid(format!("{} state parts given, the model has {}", s.len(), shapes.len()), Vec::new()))
        }
        Some(s) => s.to_vec(),
        None => shapes.iter().map(|s| ArrayD::zeros(IxDyn(s))).collect(),
    };
    let starts: Vec<usize> = (0..steps).step_by(segment).collect();
    if let Some(t) = targets {
        if t.shape().first() != Some(&steps) {
            return Err(invalid(
                "targets must have the sequence's length on axis 0".into(),
                vec![x.shape().to_vec(), t.shape().to_vec()],
            ));
        }
    }
    let slice = |a: &ArrayD<T>, t0: usize| a.slice_axis(Axis(0), Slice::from(t0..(t0 + segment).min(steps))).to_owned();
    let mut graphs: Vec<Segment<T>> = Vec::new();
    let graph_for = |graphs: &mut Vec<Segment<T>>, t0: usize, loss: &mut LossFn<'_, T>| -> Result<usize> {
        let xs = slice(x, t0);
        let ts = targets.map(|t| slice(t, t0));
        let len = xs.shape()[0];
        if let Some(k) = graphs.iter().position(|s| s.len == len) {
            let s = &mut graphs[k];
            s.g.set_value(s.x, xs)?;
            if let (Some(id), Some(v)) = (s.target, ts) {
                s.g.set_value(id, v)?;
            }
            return Ok(k);
        }
        graphs.push(Segment::record(model, p, xs, ts, &shapes, loss)?);
        Ok(graphs.len() - 1)
    };
    let set_state = |s: &mut Segment<T>, st: &[ArrayD<T>]| -> Result<()> {
        for (&id, v) in s.state_in.iter().zip(st) {
            s.g.set_value(id, v.clone())?;
        }
        Ok(())
    };

    // Forward: keep the state every segment starts from.
    let mut boundary = Vec::with_capacity(starts.len());
    for &t0 in &starts {
        boundary.push(state.clone());
        let k = graph_for(&mut graphs, t0, &mut loss)?;
        let s = &mut graphs[k];
        set_state(s, &state)?;
        s.g.replay_prefix(s.forward_nodes)?;
        state = s.final_state.iter().map(|&f| s.g.value(f).map(|v| v.to_owned())).collect::<Result<_>>()?;
    }
    let final_state = state;

    // Backward, newest segment first, seeded with the gradient of the state it hands on.
    let mut seed: Vec<ArrayD<T>> = shapes.iter().map(|s| ArrayD::zeros(IxDyn(s))).collect();
    let mut grads: BTreeMap<String, ArrayD<T>> = BTreeMap::new();
    let mut total = 0.0;
    for (i, &t0) in starts.iter().enumerate().rev() {
        let k = graph_for(&mut graphs, t0, &mut loss)?;
        let s = &mut graphs[k];
        set_state(s, &boundary[i])?;
        for (&id, v) in s.seed_in.iter().zip(&seed) {
            s.g.set_value(id, v.clone())?;
        }
        // Only what is read below is kept; every other value is released after its last use.
        let keep: Vec<NodeId> = std::iter::once(s.loss)
            .chain(s.param_grads.iter().map(|(_, id)| *id))
            .chain(s.state_grads.iter().copied())
            .collect();
        s.g.replay_keeping(&keep)?;
        total += s.g.value(s.loss)?.iter().map(|v| v.f64()).sum::<f64>();
        for (name, id) in &s.param_grads {
            let v = s.g.value(*id)?;
            match grads.get_mut(name) {
                Some(acc) => *acc += &v,
                None => {
                    grads.insert(name.clone(), v.to_owned());
                }
            }
        }
        seed = s.state_grads.iter().map(|&d| s.g.value(d).map(|v| v.to_owned())).collect::<Result<_>>()?;
    }
    Ok(RecomputedStep { loss: total, grads, final_state })
}
