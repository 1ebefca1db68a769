//! The steps of the LSTM derivation in the lectures: a residual cell, then a gated one.
//!
//! ```text
//! residual:  s_t = s_{t-1} + tanh(U x_t + V s_{t-1} + b)
//! gated:     i_t = σ(U_i x_t + V_i s_{t-1} + b_i)     f_t = σ(U_f x_t + V_f s_{t-1} + b_f)
//!            s_t = f_t ⊙ s_{t-1} + i_t ⊙ tanh(U x_t + V s_{t-1} + b)
//! ```

use smallvec::SmallVec;
use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use crate::cell::{Cell, State, Step};
use crate::gate::Affine;
use crate::init::{ParamSpec, Role};

fn term(prefix: &str, sfx: &str) -> Affine {
    Affine::new(&[format!("{prefix}U{sfx}"), format!("{prefix}V{sfx}")], Some(format!("{prefix}b{sfx}")))
}

fn specs(a: &Affine, input: usize, hidden: usize) -> Vec<ParamSpec> {
    vec![
        ParamSpec::new(&a.weights[0], &[hidden, input], Role::InputWeight, 1, hidden),
        ParamSpec::new(&a.weights[1], &[hidden, hidden], Role::RecurrentWeight, 1, hidden),
        ParamSpec::new(a.bias.as_deref().unwrap_or_default(), &[hidden], Role::Bias, 1, hidden),
    ]
}

/// The residual cell: parameters `{prefix}U [H, I]`, `V [H, H]`, `b [H]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Residual {
    /// `U x + V s + b`.
    pub update: Affine,
    /// Sizes `I`, `H`.
    pub sizes: [usize; 2],
}

impl Residual {
    /// A residual cell named under `prefix`.
    pub fn new(prefix: &str, input: usize, hidden: usize) -> Self {
        Residual { update: term(prefix, ""), sizes: [input, hidden] }
    }
}

impl<T: Float> Cell<T> for Residual {
    fn input_size(&self) -> usize {
        self.sizes[0]
    }
    fn output_size(&self) -> usize {
        self.sizes[1]
    }
    fn params(&self) -> Vec<ParamSpec> {
        specs(&self.update, self.sizes[0], self.sizes[1])
    }
    /// `x [B, I]`, state `s [B, H]` → `s' [B, H]`.
    fn step(&self, g: &mut Graph<T>, p: &ParamStore<T>, x: NodeId, s: &State) -> Result<Step> {
        let prev = s.part(g, 0)?;
        let mut g = g.scope("s");
        let z = self.update.apply(&mut g, p, &[x, prev])?;
        let t = g.tanh(z)?;
        let s_new = g.add(prev, t)?;
        Ok(Step { output: s_new, state: State::one(s_new), taps: SmallVec::new() })
    }
}

/// The gated residual cell: parameters `{prefix}U_i, V_i, b_i, U_f, V_f, b_f, U, V, b`.
#[derive(Clone, Debug, PartialEq)]
pub struct GatedResidual {
    /// The input gate's term.
    pub input_gate: Affine,
    /// The forget gate's term.
    pub forget_gate: Affine,
    /// The candidate's term.
    pub update: Affine,
    /// Sizes `I`, `H`.
    pub sizes: [usize; 2],
}

impl GatedResidual {
    /// A gated residual cell named under `prefix`.
    pub fn new(prefix: &str, input: usize, hidden: usize) -> Self {
        GatedResidual {
            input_gate: term(prefix, "_i"),
            forget_gate: term(prefix, "_f"),
            update: term(prefix, ""),
            sizes: [input, hidden],
        }
    }
}

impl<T: Float> Cell<T> for GatedResidual {
    fn input_size(&self) -> usize {
        self.sizes[0]
    }
    fn output_size(&self) -> usize {
        self.sizes[1]
    }
    fn tap_names(&self) -> &'static [&'static str] {
        &["i", "f"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        let [i, h] = self.sizes;
        [&self.input_gate, &self.forget_gate, &self.update].iter().flat_map(|a| specs(a, i, h)).collect()
    }
    /// `x [B, I]`, state `s [B, H]` → `s' [B, H]`; taps `i f`.
    fn step(&self, g: &mut Graph<T>, p: &ParamStore<T>, x: NodeId, s: &State) -> Result<Step> {
        let prev = s.part(g, 0)?;
        let i = {
            let mut g = g.scope("input_gate");
            let z = self.input_gate.apply(&mut g, p, &[x, prev])?;
            g.sigmoid(z)?
        };
        let f = {
            let mut g = g.scope("forget_gate");
            let z = self.forget_gate.apply(&mut g, p, &[x, prev])?;
            g.sigmoid(z)?
        };
        let s_new = {
            let mut g = g.scope("s");
            let z = self.update.apply(&mut g, p, &[x, prev])?;
            let cand = g.tanh(z)?;
            let keep = g.mul(f, prev)?;
            let write = g.mul(i, cand)?;
            g.add(keep, write)?
        };
        Ok(Step { output: s_new, state: State::one(s_new), taps: SmallVec::from_slice(&[i, f]) })
    }
}
