//! The LSTM, PyTorch's `nn.LSTM` (gate order i, f, g, o), with optional peephole
//! connections (Gers & Schmidhuber):
//!
//! ```text
//! i = σ(W_ii x + b_ii + W_hi h + b_hi + p_i ⊙ c)     f = σ(… + p_f ⊙ c)
//! g = tanh(W_ig x + b_ig + W_hg h + b_hg)            c' = f ⊙ c + i ⊙ g
//! o = σ(W_io x + b_io + W_ho h + b_ho + p_o ⊙ c')    h' = o ⊙ tanh(c')
//! ```
//! (without peepholes the `p` terms are absent). The peephole weights are one
//! tensor `weight_ch_l{k}` `[3H]`, blocks `p_i, p_f, p_o`; the output gate's
//! peephole sees the new cell state.
//!
//! Without peepholes a step is one fused node ([`Graph::lstm_cell`]) whose output
//! holds `h' | c' | i | f | g | o`; `h'`, `c'` and the four gates (the taps) are
//! recorded as named slices of it. [`Lstm::unfused`] records every gate's
//! primitive ops instead (the same values and gradients, many more nodes).

use smallvec::SmallVec;
use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use crate::cell::{Cell, State, Step};
use crate::gate::{FusedGates, TorchNames};
use crate::init::{ParamSpec, Role};

/// An LSTM cell with PyTorch's layout; state `(h, c)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lstm {
    /// The gate helper (i, f, g, o).
    pub gates: FusedGates,
    /// The peephole tensor's name, if the cell has peepholes.
    pub peephole: Option<String>,
    /// Record a step as one fused node (the default; peephole cells are never fused).
    pub fused: bool,
}

impl Lstm {
    /// Layer `layer` of a module named `prefix` (e.g. `"lstm."`), `_reverse` if `reverse`.
    pub fn new(prefix: &str, layer: usize, reverse: bool, input: usize, hidden: usize) -> Self {
        let gates = FusedGates {
            names: TorchNames::new(prefix, layer, reverse),
            gates: &["input_gate", "forget_gate", "cell_gate", "output_gate"],
            input,
            hidden,
        };
        Lstm { gates, peephole: None, fused: true }
    }

    /// The same cell recording every gate's primitive ops instead of one fused node.
    pub fn unfused(mut self) -> Self {
        self.fused = false;
        self
    }

    fn is_fused(&self) -> bool {
        self.fused && self.peephole.is_none()
    }

    /// The same cell with peephole connections (`{prefix}weight_ch_l{k}[_reverse]`, `[3H]`).
    pub fn with_peepholes(mut self, prefix: &str, layer: usize, reverse: bool) -> Self {
        self.peephole = Some(TorchNames::extra(prefix, "weight_ch", layer, reverse));
        self
    }

    fn peep<T: Float>(&self, g: &mut Graph<T>, p: &ParamStore<T>, k: usize, z: NodeId, c: NodeId) -> Result<NodeId> {
        match &self.peephole {
            None => Ok(z),
            Some(name) => {
                let w = g.param(p, name)?;
                let h = self.gates.hidden;
                let pk = g.narrow(w, 0, k * h, h)?;
                let t = g.mul(pk, c)?;
                g.add(z, t)
            }
        }
    }
}

impl<T: Float> Cell<T> for Lstm {
    fn input_size(&self) -> usize {
        self.gates.input
    }
    fn output_size(&self) -> usize {
        self.gates.hidden
    }
    fn state_shapes(&self, batch: usize) -> Vec<Vec<usize>> {
        vec![vec![batch, self.gates.hidden]; 2]
    }
    fn tap_names(&self) -> &'static [&'static str] {
        &["i", "f", "g", "o"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut v = self.gates.specs(Some(1));
        if let Some(n) = &self.peephole {
            v.push(ParamSpec::new(n, &[3 * self.gates.hidden], Role::Peephole, 3, self.gates.hidden));
        }
        v
    }
    fn project_inputs(&self, g: &mut Graph<T>, p: &ParamStore<T>, xs: NodeId) -> Result<Option<NodeId>> {
        if self.is_fused() {
            return self.gates.input_projection_both_biases(g, p, xs).map(Some);
        }
        self.gates.input_projection(g, p, xs).map(Some)
    }
    /// `xp [B, 4H]` (the projected input), state `(h, c)` each `[B, H]` → output `h'`, state `(h', c')`; taps `i f g o`.
    fn step_projected(&self, g: &mut Graph<T>, p: &ParamStore<T>, xp: NodeId, s: &State) -> Result<Step> {
        let (h, c) = (s.part(g, 0)?, s.part(g, 1)?);
        if self.is_fused() {
            let hh = self.gates.hidden_product(g, p, h)?;
            let out = g.scope("cell").lstm_cell(xp, hh, c)?;
            let gates = &self.gates;
            let h_new = gates.block(g, out, 0, "h")?;
            let c_new = gates.block(g, out, 1, "c")?;
            let taps = [
                gates.block(g, out, 2, "input_gate")?,
                gates.block(g, out, 3, "forget_gate")?,
                gates.block(g, out, 4, "cell_gate")?,
                gates.block(g, out, 5, "output_gate")?,
            ];
            return Ok(Step { output: h_new, state: State::two(h_new, c_new), taps: SmallVec::from_slice(&taps) });
        }
        let z = self.gates.preactivations_projected(g, p, xp, h)?;
        let i = {
            let mut g = g.scope("input_gate");
            let zi = self.peep(&mut g, p, 0, z[0], c)?;
            g.sigmoid(zi)?
        };
        let f = {
            let mut g = g.scope("forget_gate");
            let zf = self.peep(&mut g, p, 1, z[1], c)?;
            g.sigmoid(zf)?
        };
        let gg = g.scope("cell_gate").tanh(z[2])?;
        let c_new = {
            let mut g = g.scope("c");
            let fc = g.mul(f, c)?;
            let ig = g.mul(i, gg)?;
            g.add(fc, ig)?
        };
        let o = {
            let mut g = g.scope("output_gate");
            let zo = self.peep(&mut g, p, 2, z[3], c_new)?;
            g.sigmoid(zo)?
        };
        let h_new = {
            let mut g = g.scope("h");
            let tc = g.tanh(c_new)?;
            g.mul(o, tc)?
        };
        Ok(Step { output: h_new, state: State::two(h_new, c_new), taps: SmallVec::from_slice(&[i, f, gg, o]) })
    }
}
