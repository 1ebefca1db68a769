//! The Jordan network: the previous *output* feeds the hidden layer.
//!
//! ```text
//! h_t = tanh(W_h x_t + U_h y_{t-1} + b_h)
//! y_t = σ(W_y h_t + b_y)
//! ```

use smallvec::SmallVec;
use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use crate::cell::{Cell, State, Step};
use crate::gate::Affine;
use crate::init::{ParamSpec, Role};

/// A Jordan cell; its state is the previous output `y` `[B, O]`, its output `y`,
/// and its tap `h` the hidden layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Jordan {
    /// `W_h x + U_h y + b_h`.
    pub hidden_gate: Affine,
    /// `W_y h + b_y`.
    pub output_gate: Affine,
    /// Sizes `I`, `H`, `O`.
    pub sizes: [usize; 3],
}

impl Jordan {
    /// Parameters `{prefix}W_h [H, I]`, `U_h [H, O]`, `b_h [H]`, `W_y [O, H]`, `b_y [O]`.
    pub fn new(prefix: &str, input: usize, hidden: usize, output: usize) -> Self {
        let n = |s: &str| format!("{prefix}{s}");
        Jordan {
            hidden_gate: Affine::new(&[n("W_h"), n("U_h")], Some(n("b_h"))),
            output_gate: Affine::new(&[n("W_y")], Some(n("b_y"))),
            sizes: [input, hidden, output],
        }
    }
}

impl<T: Float> Cell<T> for Jordan {
    fn input_size(&self) -> usize {
        self.sizes[0]
    }
    fn output_size(&self) -> usize {
        self.sizes[2]
    }
    fn tap_names(&self) -> &'static [&'static str] {
        &["h"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        let [i, h, o] = self.sizes;
        let w = &self.hidden_gate.weights;
        let wy = &self.output_gate.weights[0];
        vec![
            ParamSpec::new(&w[0], &[h, i], Role::InputWeight, 1, h),
            ParamSpec::new(&w[1], &[h, o], Role::RecurrentWeight, 1, h),
            ParamSpec::new(self.hidden_gate.bias.as_deref().unwrap_or("b_h"), &[h], Role::Bias, 1, h),
            ParamSpec::new(wy, &[o, h], Role::InputWeight, 1, h),
            ParamSpec::new(self.output_gate.bias.as_deref().unwrap_or("b_y"), &[o], Role::Bias, 1, h),
        ]
    }
    /// `x [B, I]`, state `y [B, O]` → `y' [B, O]`; tap `h [B, H]`.
    fn step(&self, g: &mut Graph<T>, p: &ParamStore<T>, x: NodeId, s: &State) -> Result<Step> {
        let y_prev = s.part(g, 0)?;
        let h = {
            let mut g = g.scope("h");
            let z = self.hidden_gate.apply(&mut g, p, &[x, y_prev])?;
            g.tanh(z)?
        };
        let y = {
            let mut g = g.scope("y");
            let z = self.output_gate.apply(&mut g, p, &[h])?;
            g.sigmoid(z)?
        };
        Ok(Step { output: y, state: State::one(y), taps: SmallVec::from_slice(&[h]) })
    }
}
