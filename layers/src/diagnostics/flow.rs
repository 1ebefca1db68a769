//! How the gradient flows back through an unrolled run: `‖∂L/∂h_t‖`,
//! `‖∂h_T/∂h_t‖` and the singular values of every step Jacobian.

use ndarray::{Array2, ArrayD, Axis};
use serde::{Deserialize, Serialize};
use unrolled_autograd::{Error, Float, Graph, NodeId, Result};

use super::linalg::{jacobian, singular_values};

/// `‖∂L/∂h_t‖` (Frobenius, over the batch) for every `h_t` of `states`.
///
/// # Errors
/// As [`Graph::grad`].
pub fn loss_grad_norms<T: Float>(g: &mut Graph<T>, loss: NodeId, states: &[NodeId]) -> Result<Vec<f64>> {
    let grads = g.grad(loss, states)?;
    grads.into_iter().map(|d| Ok(g.value(d)?.iter().map(|v| v.f64().powi(2)).sum::<f64>().sqrt())).collect()
}

/// `‖∂h_T/∂h_t‖` for every `h_t` of `states` (`h_T` the last): the spectral norm
/// (largest singular value) of the Jacobian of the last state with respect to each
/// state, for batch entry `b`. One reverse sweep per unit of `h_T` gives a row of
/// every Jacobian at once. States are `[B, H]`; the entry for `h_T` itself is 1.
///
/// The states can be any chain of `[B, n]` nodes: an LSTM's `c` states give the
/// cell path's `‖∂c_T/∂c_t‖`.
///
/// # Errors
/// [`Error::InvalidInput`] for no states, states of rank other than 2, `b` out of
/// range, or a Jacobian with non-finite entries; as [`Graph::grad_with_seed`].
pub fn final_state_jacobian_norms<T: Float>(g: &mut Graph<T>, states: &[NodeId], b: usize) -> Result<Vec<f64>> {
    let Some(&last) = states.last() else {
        return Err(Error::InvalidInput {
            op: "final_state_jacobian_norms",
            scope: g.scope_path(),
            reason: "needs at least one state".into(),
            shapes: vec![],
        });
    };
    let shapes: Vec<Vec<usize>> = states.iter().map(|&s| g.shape(s).map(<[usize]>::to_vec)).collect::<Result<_>>()?;
    if shapes.iter().any(|s| s.len() != 2 || b >= s[0]) {
        return Err(Error::InvalidInput {
            op: "final_state_jacobian_norms",
            scope: g.scope_path(),
            reason: format!("needs [B, H] states and a batch index below B (got {b})"),
            shapes,
        });
    }
    let out = &shapes[shapes.len() - 1];
    let mut jac: Vec<Array2<f64>> = shapes.iter().map(|s| Array2::zeros((out[1], s[1]))).collect();
    for k in 0..out[1] {
        let mut seed = ArrayD::<T>::zeros(out.clone());
        seed[[b, k]] = T::one();
        let s = g.constant(seed);
        let grads = g.grad_with_seed(last, s, states)?;
        for (j, d) in jac.iter_mut().zip(grads) {
            j.row_mut(k).assign(&g.value(d)?.index_axis(Axis(0), b).mapv(|v| v.f64()));
        }
    }
    jac.iter().map(|j| Ok(singular_values(j)?.first().copied().unwrap_or(0.0))).collect()
}

/// Gradient flow through an unrolled run, as data. JSON writes a non-finite norm
/// (an overflowed run) as `null`; such a flow serializes but does not read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientFlow {
    /// `‖∂L/∂h_t‖` for every step `t = 1 … T`.
    pub loss_grad_norms: Vec<f64>,
    /// `‖∂h_T/∂h_t‖` (spectral norm, batch entry 0) for every step `t = 1 … T`.
    pub final_state_jacobian_norms: Vec<f64>,
    /// The singular values of `∂h_t/∂h_{t-1}` (batch entry 0) for every step `t = 1 … T`.
    /// For a cell with several state parts (an LSTM) this is the partial derivative
    /// through the given parts only (`c_{t-1}` held fixed); `final_state_jacobian_norms`
    /// follows every path.
    pub step_singular_values: Vec<Vec<f64>>,
}

impl GradientFlow {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("gradient flow always serializes")
    }
}

/// Gradient flow of `loss` through the states `h_0 … h_T` (`states[0]` the initial
/// state, `[B, H]` each). Costs one reverse sweep for the loss and `H` for each of
/// the two Jacobian diagnostics per step, all recorded into `g`: meant for the small
/// networks one inspects.
///
/// ```
/// use ndarray::{array, ArrayD};
/// use unrolled_autograd::Graph;
/// use unrolled_layers::diagnostics::gradient_flow;
/// # fn main() -> unrolled_autograd::Result<()> {
/// // h_t = h_{t-1} Wᵀ with W = 0.5 I, loss Σ h_3: every step halves the gradient.
/// let mut g = Graph::<f64>::new();
/// let w = g.constant(array![[0.5, 0.0], [0.0, 0.5]].into_dyn());
/// let mut hs = vec![g.input(ArrayD::ones(vec![1, 2]))];
/// for _ in 0..3 {
///     let h = g.matmul_t(*hs.last().unwrap(), w, false, true)?;
///     hs.push(h);
/// }
/// let loss = g.sum_all(hs[3])?;
/// let flow = gradient_flow(&mut g, loss, &hs)?;
/// assert_eq!(flow.final_state_jacobian_norms, vec![0.25, 0.5, 1.0]);
/// assert_eq!(flow.step_singular_values, vec![vec![0.5, 0.5]; 3]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for fewer than two states or non-finite Jacobians; as
/// [`Graph::grad`] and [`jacobian`].
pub fn gradient_flow<T: Float>(g: &mut Graph<T>, loss: NodeId, states: &[NodeId]) -> Result<GradientFlow> {
    if states.len() < 2 {
        return Err(Error::InvalidInput {
            op: "gradient_flow",
            scope: g.scope_path(),
            reason: format!("needs the initial state and at least one step's (got {} states)", states.len()),
            shapes: vec![],
        });
    }
    let loss_grad_norms = loss_grad_norms(g, loss, &states[1..])?;
    let final_state_jacobian_norms = final_state_jacobian_norms(g, &states[1..], 0)?;
    let mut step_singular_values = Vec::with_capacity(states.len() - 1);
    for w in states.windows(2) {
        step_singular_values.push(singular_values(&jacobian(g, w[1], w[0], 0)?)?);
    }
    Ok(GradientFlow { loss_grad_norms, final_state_jacobian_norms, step_singular_values })
}
