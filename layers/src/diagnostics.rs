//! Gradient-flow diagnostics on an unrolled graph: how the gradient reaching
//! `h_t` changes with `t`, the step Jacobian `∂h_t/∂h_{t-1}` and its singular
//! values (the lectures' argument for vanishing and exploding gradients), and
//! how saturated an LSTM's or GRU's gates are. Everything is computed with the
//! graph's own reverse mode; results are serde data.

use ndarray::{Array2, ArrayD, Axis};
use serde::{Deserialize, Serialize};
use unrolled_autograd::{Error, Float, Graph, NodeId, Result};

/// `‖∂L/∂h_t‖` (Frobenius, over the batch) for every `h_t` of `states`.
///
/// # Errors
/// As [`Graph::grad`].
pub fn loss_grad_norms<T: Float>(g: &mut Graph<T>, loss: NodeId, states: &[NodeId]) -> Result<Vec<f64>> {
    let grads = g.grad(loss, states)?;
    grads.into_iter().map(|d| Ok(g.value(d)?.iter().map(|v| v.f64().powi(2)).sum::<f64>().sqrt())).collect()
}

/// The Jacobian `∂y[b, :]/∂x[b, :]` of batch entry `b` (rows: `y`'s units, columns:
/// `x`'s), by one vector-Jacobian product per unit of `y`. `x` and `y` are `[B, n]`.
/// Each product records its gradient nodes into the graph.
///
/// # Errors
/// [`Error::InvalidInput`] for ranks other than 2 or `b` out of range; as [`Graph::grad`].
pub fn jacobian<T: Float>(g: &mut Graph<T>, y: NodeId, x: NodeId, b: usize) -> Result<Array2<f64>> {
    let (ys, xs) = (g.shape(y)?.to_vec(), g.shape(x)?.to_vec());
    if ys.len() != 2 || xs.len() != 2 || b >= ys[0] || b >= xs[0] {
        return Err(Error::InvalidInput {
            op: "jacobian",
            scope: g.scope_path(),
            reason: format!("needs [B, n] nodes and a batch index below B (got {b})"),
            shapes: vec![ys, xs],
        });
    }
    let mut j = Array2::zeros((ys[1], xs[1]));
    for k in 0..ys[1] {
        let mut seed = ArrayD::<T>::zeros(ys.clone());
        seed[[b, k]] = T::one();
        let s = g.constant(seed);
        let d = g.grad_with_seed(y, s, &[x])?[0];
        let row = g.value(d)?.index_axis(Axis(0), b).mapv(|v| v.f64());
        j.row_mut(k).assign(&row);
    }
    Ok(j)
}

/// The singular values of `a`, largest first (from the eigenvalues of `aᵀa`, by
/// cyclic Jacobi rotations).
pub fn singular_values(a: &Array2<f64>) -> Vec<f64> {
    let mut m = a.t().dot(a);
    let n = m.nrows();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[[i, j]].powi(2))
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if m[[p, q]].abs() < 1e-300 {
                    continue;
                }
                let theta = (m[[q, q]] - m[[p, p]]) / (2.0 * m[[p, q]]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (mkp, mkq) = (m[[k, p]], m[[k, q]]);
                    m[[k, p]] = c * mkp - s * mkq;
                    m[[k, q]] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[[p, k]], m[[q, k]]);
                    m[[p, k]] = c * mpk - s * mqk;
                    m[[q, k]] = s * mpk + c * mqk;
                }
            }
        }
    }
    let mut sv: Vec<f64> = (0..n).map(|i| m[[i, i]].max(0.0).sqrt()).collect();
    sv.sort_by(|a, b| b.total_cmp(a));
    sv
}

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

/// Gradient flow through an unrolled run, as data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientFlow {
    /// `‖∂L/∂h_t‖` for every step.
    pub loss_grad_norms: Vec<f64>,
    /// The singular values of `∂h_t/∂h_{t-1}` (batch entry 0) for every step after the first.
    pub step_singular_values: Vec<Vec<f64>>,
}

/// Gradient flow of `loss` through the states `h_0 … h_T` (`states[0]` the initial state).
///
/// # Errors
/// As [`Graph::grad`] and [`jacobian`].
pub fn gradient_flow<T: Float>(g: &mut Graph<T>, loss: NodeId, states: &[NodeId]) -> Result<GradientFlow> {
    let loss_grad_norms = loss_grad_norms(g, loss, &states[1.min(states.len())..])?;
    let mut step_singular_values = Vec::with_capacity(states.len().saturating_sub(1));
    for w in states.windows(2) {
        step_singular_values.push(singular_values(&jacobian(g, w[1], w[0], 0)?));
    }
    Ok(GradientFlow { loss_grad_norms, step_singular_values })
}
