//! The Elman RNN, PyTorch's `nn.RNN`: `h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`.

use smallvec::SmallVec;
use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use crate::cell::{Cell, State, Step};
use crate::gate::{FusedGates, TorchNames};
use crate::init::ParamSpec;

/// The nonlinearity of an Elman cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    Tanh,
    /// `relu`.
    Relu,
}

/// An Elman cell with PyTorch's parameter layout (`weight_ih_l{k}` `[H, I]`, …).
#[derive(Clone, Debug, PartialEq)]
pub struct Elman {
    /// The gate helper (one gate).
    pub gates: FusedGates,
    /// The nonlinearity.
    pub nonlinearity: Nonlinearity,
}

impl Elman {
    /// Layer `layer` of a module named `prefix` (e.g. `"rnn."`), `_reverse` if `reverse`.
    pub fn new(
        prefix: &str,
        layer: usize,
        reverse: bool,
        input: usize,
        hidden: usize,
        nonlinearity: Nonlinearity,
    ) -> Self {
        let gates = FusedGates { names: TorchNames::new(prefix, layer, reverse), gates: &["h"], input, hidden };
        Elman { gates, nonlinearity }
    }
}

impl<T: Float> Cell<T> for Elman {
    fn input_size(&self) -> usize {
        self.gates.input
    }
    fn output_size(&self) -> usize {
        self.gates.hidden
    }
    fn params(&self) -> Vec<ParamSpec> {
        self.gates.specs(None)
    }
    /// `x W_ihᵀ + b_ih + b_hh` (both biases, added once for the whole sequence).
    fn project_inputs(&self, g: &mut Graph<T>, p: &ParamStore<T>, xs: NodeId) -> Result<Option<NodeId>> {
        self.gates.input_projection_both_biases(g, p, xs).map(Some)
    }
    /// `xp [B, H]` (the projected input with both biases), state `h [B, H]` → `h' [B, H]`
    /// (output and state): `act(xp + h W_hhᵀ)`.
    fn step_projected(&self, g: &mut Graph<T>, p: &ParamStore<T>, xp: NodeId, s: &State) -> Result<Step> {
        let z = {
            let h = s.part(g, 0)?;
            let hh = self.gates.hidden_product(g, p, h)?;
            g.scope("gates").add(xp, hh)?
        };
        let mut g = g.scope("h");
        let h = match self.nonlinearity {
            Nonlinearity::Tanh => g.tanh(z)?,
            Nonlinearity::Relu => g.relu(z)?,
        };
        Ok(Step { output: h, state: State::one(h), taps: SmallVec::new() })
    }
}
