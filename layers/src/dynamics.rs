//! A recurrent network as a dynamical system: for an autonomous map
//! `h(t+1) = f(h(t))` (a cell with its input held fixed), the fixed points
//! `h* = f(h*)`, found by Newton's method on the graph's own Jacobians, and their
//! stability from the Jacobian's eigenvalues (stable when every `|λ| < 1`).
//!
//! ```
//! use ndarray::ArrayD;
//! use unrolled_layers::dynamics::{find_fixed_point, NewtonOptions};
//! # fn main() -> unrolled_autograd::Result<()> {
//! // The lectures' 1-D map h(t+1) = 0.8 h(t) + 1: one stable fixed point, 5.
//! let fp = find_fixed_point::<f64>(
//!     &mut |g, h| {
//!         let a = g.scalar(0.8);
//!         let b = g.scalar(1.0);
//!         let ah = g.mul(h, a)?;
//!         g.add(ah, b)
//!     },
//!     &[0.0],
//!     NewtonOptions::default(),
//! )?;
//! assert!(fp.converged && fp.stable);
//! assert!((fp.h[0] - 5.0).abs() < 1e-12);
//! assert!((fp.spectral_radius - 0.8).abs() < 1e-12);
//! # Ok(()) }
//! ```

use ndarray::{Array2, ArrayD, IxDyn};
use serde::{Deserialize, Serialize};
use unrolled_autograd::{Error, Float, Graph, NodeId, Result};

use crate::diagnostics::{eigenvalues, jacobian, solve, Eigenvalue};

/// A recurrent map `h ↦ f(h)`, recorded into a graph: given `h` `[1, n]`, it
/// returns the node of `f(h)` `[1, n]`.
pub type RecurrentMap<'a, T> = dyn FnMut(&mut Graph<T>, NodeId) -> Result<NodeId> + 'a;

/// Settings of [`find_fixed_point`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewtonOptions {
    /// Stop when `‖f(h) - h‖ ≤ tol`.
    pub tol: f64,
    /// Newton iterations at most.
    pub max_iter: usize,
}

impl Default for NewtonOptions {
    fn default() -> Self {
        NewtonOptions { tol: 1e-10, max_iter: 50 }
    }
}

/// A fixed point and its stability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixedPoint {
    /// The point `h*` (the last iterate when not converged).
    pub h: Vec<f64>,
    /// `‖f(h) - h‖` there.
    pub residual: f64,
    /// Newton iterations taken.
    pub iterations: usize,
    /// Whether the residual reached the tolerance.
    pub converged: bool,
    /// The eigenvalues of the Jacobian `∂f/∂h` at `h`, largest modulus first (empty
    /// when the Jacobian there is not finite).
    pub eigenvalues: Vec<Eigenvalue>,
    /// The largest `|λ|` (NaN when the Jacobian is not finite).
    pub spectral_radius: f64,
    /// A converged fixed point that is stable (attracting): spectral radius below 1.
    pub stable: bool,
}

/// Records `f(h)` into a fresh graph: the graph, the input node and the output node.
fn record<T: Float>(map: &mut RecurrentMap<'_, T>, h: &[f64]) -> Result<(Graph<T>, NodeId, NodeId)> {
    let mut g = Graph::<T>::new();
    let x =
        g.input(ArrayD::from_shape_vec(IxDyn(&[1, h.len()]), h.iter().map(|&v| T::of(v)).collect()).map_err(|e| {
            Error::InvalidInput { op: "fixed_point", scope: String::new(), reason: e.to_string(), shapes: vec![] }
        })?);
    let y = map(&mut g, x)?;
    let ys = g.shape(y)?.to_vec();
    if ys != [1, h.len()] {
        return Err(Error::ShapeMismatch { op: "fixed_point", scope: g.scope_path(), lhs: vec![1, h.len()], rhs: ys });
    }
    Ok((g, x, y))
}

/// `f(h)`.
fn value<T: Float>(map: &mut RecurrentMap<'_, T>, h: &[f64]) -> Result<Vec<f64>> {
    let (g, _, y) = record(map, h)?;
    Ok(g.value(y)?.iter().map(|v| v.f64()).collect())
}

/// `f(h)` and `∂f/∂h` at `h`.
fn value_and_jacobian<T: Float>(map: &mut RecurrentMap<'_, T>, h: &[f64]) -> Result<(Vec<f64>, Array2<f64>)> {
    let (mut g, x, y) = record(map, h)?;
    let fy: Vec<f64> = g.value(y)?.iter().map(|v| v.f64()).collect();
    let j = jacobian(&mut g, y, x, 0)?;
    Ok((fy, j))
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Newton's method for `f(h) = h` from `start`: each iteration solves
/// `(J - I) δ = h - f(h)` with `J = ∂f/∂h` from the graph (one reverse sweep per
/// unit), and halves the step while it does not reduce the residual. A singular
/// `J - I`, a step that cannot reduce the residual or a non-finite Jacobian ends
/// the iteration: the result then says `converged: false`.
///
/// For a cell, `map` records one step with the input held fixed, e.g.
/// `|g, h| Ok(cell.step(g, &params, zero_input_node, &State::one(h))?.output)`
/// (a single-part state; an LSTM's state has two parts).
///
/// # Errors
/// [`Error::InvalidInput`] for an empty or non-finite start; [`Error::ShapeMismatch`]
/// when `map` does not return a `[1, n]` node for a `[1, n]` input; the map's own errors.
pub fn find_fixed_point<T: Float>(
    map: &mut RecurrentMap<'_, T>,
    start: &[f64],
    opts: NewtonOptions,
) -> Result<FixedPoint> {
    if start.is_empty() || start.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidInput {
            op: "fixed_point",
            scope: String::new(),
            reason: "the start must be a non-empty point with finite coordinates".into(),
            shapes: vec![vec![start.len()]],
        });
    }
    let n = start.len();
    let mut h = start.to_vec();
    let (fh, mut j) = value_and_jacobian(map, &h)?;
    let mut r: Vec<f64> = fh.iter().zip(&h).map(|(f, x)| f - x).collect();
    let mut iterations = 0;
    while norm(&r) > opts.tol && iterations < opts.max_iter && j.iter().all(|v| v.is_finite()) {
        let mut a = j.clone();
        for i in 0..n {
            a[[i, i]] -= 1.0;
        }
        let rhs: Vec<f64> = r.iter().map(|v| -v).collect();
        let Ok(delta) = solve(&a, &rhs) else { break };
        // Halve the step until the residual shrinks; the Jacobian only at the accepted point.
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..30 {
            let cand: Vec<f64> = h.iter().zip(&delta).map(|(x, d)| x + step * d).collect();
            let rc: Vec<f64> = value(map, &cand)?.iter().zip(&cand).map(|(f, x)| f - x).collect();
            if norm(&rc) < norm(&r) {
                accepted = Some((cand, rc));
                break;
            }
            step *= 0.5;
        }
        let Some((cand, rc)) = accepted else { break };
        iterations += 1;
        j = value_and_jacobian(map, &cand)?.1;
        (h, r) = (cand, rc);
    }
    let residual = norm(&r);
    let converged = residual <= opts.tol;
    let (eigenvalues, spectral_radius) = if j.iter().all(|v| v.is_finite()) {
        let ev = eigenvalues(&j)?;
        let rho = ev.first().map_or(0.0, |e| e.modulus());
        (ev, rho)
    } else {
        (Vec::new(), f64::NAN)
    };
    Ok(FixedPoint {
        h,
        residual,
        iterations,
        converged,
        eigenvalues,
        spectral_radius,
        stable: converged && spectral_radius < 1.0,
    })
}

/// The distinct fixed points Newton's method reaches from `starts`: converged
/// points closer than `min_distance` to one already found are dropped. Ordered
/// as first found.
///
/// ```
/// use unrolled_layers::dynamics::{fixed_points, NewtonOptions};
/// # fn main() -> unrolled_autograd::Result<()> {
/// // h = tanh(2h) has three fixed points: -0.9575, 0 (unstable) and 0.9575.
/// let mut map = |g: &mut unrolled_autograd::Graph<f64>, h| {
///     let two = g.scalar(2.0);
///     let z = g.mul(h, two)?;
///     g.tanh(z)
/// };
/// let starts = [vec![-2.0], vec![0.1], vec![2.0]];
/// let found = fixed_points(&mut map, &starts, NewtonOptions::default(), 1e-8)?;
/// assert_eq!(found.iter().map(|f| f.stable).collect::<Vec<_>>(), [true, false, true]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`find_fixed_point`].
pub fn fixed_points<T: Float>(
    map: &mut RecurrentMap<'_, T>,
    starts: &[Vec<f64>],
    opts: NewtonOptions,
    min_distance: f64,
) -> Result<Vec<FixedPoint>> {
    let mut found: Vec<FixedPoint> = Vec::new();
    for s in starts {
        let fp = find_fixed_point(map, s, opts)?;
        if fp.converged
            && found.iter().all(|f| norm(&f.h.iter().zip(&fp.h).map(|(a, b)| a - b).collect::<Vec<_>>()) > min_distance)
        {
            found.push(fp);
        }
    }
    Ok(found)
}

/// Iterates the map `steps` times from `start`: the trajectory `h(0) … h(steps)`.
///
/// ```
/// use unrolled_layers::dynamics::iterate;
/// # fn main() -> unrolled_autograd::Result<()> {
/// let mut map = |g: &mut unrolled_autograd::Graph<f64>, h| {
///     let (a, b) = (g.scalar(0.8), g.scalar(1.0));
///     let ah = g.mul(h, a)?;
///     g.add(ah, b)
/// };
/// let path = iterate(&mut map, &[0.0], 2)?;
/// assert_eq!(path, vec![vec![0.0], vec![1.0], vec![1.8]]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`find_fixed_point`].
pub fn iterate<T: Float>(map: &mut RecurrentMap<'_, T>, start: &[f64], steps: usize) -> Result<Vec<Vec<f64>>> {
    let mut out = vec![start.to_vec()];
    for _ in 0..steps {
        let next = value(map, out.last().map(Vec::as_slice).unwrap_or(start))?;
        out.push(next);
    }
    Ok(out)
}
