//! Deep transition (Pascanu et al. 2014): an MLP as the transition function,
//! with an optional identity skip connection across time.
//!
//! ```text
//! z_t = concat(x_t, h_{t-1})
//! a_t = relu(W1 z_t + b1)                (more hidden layers: relu(W_k a + b_k))
//! h_t = tanh(W_n a_t + b_n)              (+ h_{t-1} with the skip connection)
//! ```

use smallvec::SmallVec;
use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use crate::cell::{Cell, State, Step};
use crate::init::{ParamSpec, Role};

/// A deep-transition cell: parameters `{prefix}W1 [M1, I+H]`, `b1`, …, `W{n} [H, M]`, `b{n}`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepTransition {
    /// The name prefix.
    pub prefix: String,
    /// `I`, `H`.
    pub sizes: [usize; 2],
    /// The MLP's hidden sizes (one entry per hidden layer).
    pub mlp: Vec<usize>,
    /// Whether `h_{t-1}` is added to the new state.
    pub skip: bool,
}

impl DeepTransition {
    /// A cell with MLP hidden sizes `mlp` (at least one layer).
    pub fn new(prefix: &str, input: usize, hidden: usize, mlp: &[usize], skip: bool) -> Self {
        DeepTransition { prefix: prefix.to_owned(), sizes: [input, hidden], mlp: mlp.to_vec(), skip }
    }

    fn dims(&self) -> Vec<usize> {
        let [i, h] = self.sizes;
        std::iter::once(i + h).chain(self.mlp.iter().copied()).chain(std::iter::once(h)).collect()
    }
}

impl<T: Float> Cell<T> for DeepTransition {
    fn input_size(&self) -> usize {
        self.sizes[0]
    }
    fn output_size(&self) -> usize {
        self.sizes[1]
    }
    fn tap_names(&self) -> &'static [&'static str] {
        &["a"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        let d = self.dims();
        (1..d.len())
            .flat_map(|k| {
                [
                    ParamSpec::new(&format!("{}W{k}", self.prefix), &[d[k], d[k - 1]], Role::InputWeight, 1, d[k - 1]),
                    ParamSpec::new(&format!("{}b{k}", self.prefix), &[d[k]], Role::Bias, 1, d[k - 1]),
                ]
            })
            .collect()
    }
    /// `x [B, I]`, state `h [B, H]` → `h' [B, H]`; tap `a`, the first MLP layer's activation.
    fn step(&self, g: &mut Graph<T>, p: &ParamStore<T>, x: NodeId, s: &State) -> Result<Step> {
        let n = self.dims().len() - 1;
        let h_prev = s.part(g, 0)?;
        let mut a = g.concat(&[x, h_prev], -1)?;
        let mut first = None;
        for k in 1..=n {
            let mut g = g.scope(if k < n { "mlp" } else { "h" });
            let w = g.param(p, &format!("{}W{k}", self.prefix))?;
            let b = g.param(p, &format!("{}b{k}", self.prefix))?;
            let z = g.linear(a, w, Some(b))?;
            a = if k < n { g.relu(z)? } else { g.tanh(z)? };
            if k == 1 {
                first = Some(a);
            }
        }
        let h = if self.skip { g.scope("h").add(h_prev, a)? } else { a };
        Ok(Step { output: h, state: State::one(h), taps: SmallVec::from_slice(&[first.unwrap_or(a)]) })
    }
}
