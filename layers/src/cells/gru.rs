//! The GRU in both formulations, gate order r, z, n:
//!
//! ```text
//! r = σ(W_ir x + b_ir + W_hr h + b_hr)      z = σ(W_iz x + b_iz + W_hz h + b_hz)
//! torch:    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))     (reset after the matmul)
//! original: n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)     (reset before, Cho et al. 2014)
//! h' = (1 - z) ⊙ n + z ⊙ h
//! ```
//!
//! A torch-form step is one fused node ([`Graph::gru_cell`]) whose output holds
//! `h' | r | z | n`, the gates recorded as named slices of it; [`Gru::unfused`]
//! records the primitive ops instead. The original form is always recorded in
//! primitive ops.

use smallvec::SmallVec;
use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use crate::cell::{Cell, State, Step};
use crate::gate::{FusedGates, TorchNames};
use crate::init::ParamSpec;

/// Where the reset gate is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GruVariant {
    /// PyTorch's `nn.GRU` (and cuDNN): `r ⊙ (W_hn h + b_hn)`.
    Torch,
    /// The original GRU: `W_hn (r ⊙ h) + b_hn`.
    Original,
}

/// A GRU cell with PyTorch's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Gru {
    /// The gate helper (r, z, n).
    pub gates: FusedGates,
    /// The formulation.
    pub variant: GruVariant,
    /// Record a torch-form step as one fused node (the default).
    pub fused: bool,
}

impl Gru {
    /// Layer `layer` of a module named `prefix` (e.g. `"gru."`), `_reverse` if `reverse`.
    pub fn new(prefix: &str, layer: usize, reverse: bool, input: usize, hidden: usize, variant: GruVariant) -> Self {
        let gates = FusedGates {
            names: TorchNames::new(prefix, layer, reverse),
            gates: &["reset_gate", "update_gate", "new_gate"],
            input,
            hidden,
        };
        Gru { gates, variant, fused: true }
    }

    /// The same cell recording every gate's primitive ops instead of one fused node.
    pub fn unfused(mut self) -> Self {
        self.fused = false;
        self
    }
}

impl<T: Float> Cell<T> for Gru {
    fn input_size(&self) -> usize {
        self.gates.input
    }
    fn output_size(&self) -> usize {
        self.gates.hidden
    }
    fn tap_names(&self) -> &'static [&'static str] {
        &["r", "z", "n"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        self.gates.specs(None)
    }
    fn project_inputs(&self, g: &mut Graph<T>, p: &ParamStore<T>, xs: NodeId) -> Result<Option<NodeId>> {
        self.gates.input_projection(g, p, xs).map(Some)
    }
    /// `xp [B, 3H]` (the projected input), state `h [B, H]` → `h' [B, H]`; taps `r z n`.
    fn step_projected(&self, g: &mut Graph<T>, p: &ParamStore<T>, xp: NodeId, s: &State) -> Result<Step> {
        let h = s.part(g, 0)?;
        let hd = self.gates.hidden;
        if self.fused && self.variant == GruVariant::Torch {
            let hp = {
                let mut g = g.scope("gates");
                self.gates.hidden_projection(&mut g, p, h)?
            };
            let out = g.scope("cell").gru_cell(xp, hp, h)?;
            let gates = &self.gates;
            let h_new = gates.block(g, out, 0, "h")?;
            let taps = [
                gates.block(g, out, 1, "reset_gate")?,
                gates.block(g, out, 2, "update_gate")?,
                gates.block(g, out, 3, "new_gate")?,
            ];
            return Ok(Step { output: h_new, state: State::one(h_new), taps: SmallVec::from_slice(&taps) });
        }
        let (xi, hh) = {
            let mut g = g.scope("gates");
            let xi = self.gates.split(&mut g, xp)?;
            let hh = match self.variant {
                GruVariant::Torch => {
                    let hh = self.gates.hidden_projection(&mut g, p, h)?;
                    self.gates.split(&mut g, hh)?
                }
                GruVariant::Original => {
                    // Only r and z read h directly; n reads r ⊙ h below.
                    let w = g.param(p, &self.gates.names.weight_hh)?;
                    let b = g.param(p, &self.gates.names.bias_hh)?;
                    let w_rz = g.narrow(w, 0, 0, 2 * hd)?;
                    let b_rz = g.narrow(b, 0, 0, 2 * hd)?;
                    let hh = g.linear(h, w_rz, Some(b_rz))?;
                    g.split(hh, -1, &[hd, hd])?.into_iter().collect()
                }
            };
            (xi, hh)
        };
        let r = {
            let mut g = g.scope("reset_gate");
            let zr = g.add(xi[0], hh[0])?;
            g.sigmoid(zr)?
        };
        let z = {
            let mut g = g.scope("update_gate");
            let zz = g.add(xi[1], hh[1])?;
            g.sigmoid(zz)?
        };
        let n = {
            let mut g = g.scope("new_gate");
            let rec = match self.variant {
                GruVariant::Torch => g.mul(r, hh[2])?,
                GruVariant::Original => {
                    let w = g.param(p, &self.gates.names.weight_hh)?;
                    let b = g.param(p, &self.gates.names.bias_hh)?;
                    let w_n = g.narrow(w, 0, 2 * hd, hd)?;
                    let b_n = g.narrow(b, 0, 2 * hd, hd)?;
                    let rh = g.mul(r, h)?;
                    g.linear(rh, w_n, Some(b_n))?
                }
            };
            let zn = g.add(xi[2], rec)?;
            g.tanh(zn)?
        };
        let h_new = {
            // h' = (1 - z) n + z h = n + z (h - n)
            let mut g = g.scope("h");
            let d = g.sub(h, n)?;
            let zd = g.mul(z, d)?;
            g.add(n, zd)?
        };
        Ok(Step { output: h_new, state: State::one(h_new), taps: SmallVec::from_slice(&[r, z, n]) })
    }
}
