//! Gradient-flow diagnostics on an unrolled graph: how the gradient reaching
//! `h_t` changes with `t` (`‖∂L/∂h_t‖` and `‖∂h_T/∂h_t‖`), the step Jacobian
//! `∂h_t/∂h_{t-1}` and its singular values (the lectures' argument for vanishing
//! and exploding gradients), and how saturated an LSTM's or GRU's gates are.
//! Everything is computed with the graph's own reverse mode; results are serde
//! data, and [`crate::plot`] draws them.
//!
//! ```
//! use ndarray::{array, ArrayD};
//! use unrolled_autograd::Graph;
//! use unrolled_layers::diagnostics::{jacobian, singular_values};
//! # fn main() -> unrolled_autograd::Result<()> {
//! // One step of a linear RNN h' = h Wᵀ: its Jacobian is W.
//! let mut g = Graph::<f64>::new();
//! let h = g.input(ArrayD::zeros(vec![1, 2]));
//! let w = g.constant(array![[2.0, 0.0], [0.0, 0.5]].into_dyn());
//! let h1 = g.matmul_t(h, w, false, true)?;
//! let j = jacobian(&mut g, h1, h, 0)?;
//! assert_eq!(singular_values(&j)?, vec![2.0, 0.5]);
//! # Ok(()) }
//! ```

mod flow;
mod linalg;
mod saturation;

pub use flow::{final_state_jacobian_norms, gradient_flow, loss_grad_norms, GradientFlow};
pub use linalg::{eigenvalues, jacobian, singular_values, solve, Eigenvalue};
pub use saturation::{gate_saturation, saturation, GateSaturation, Saturation, SIGMOID_GATES};
