//! Jacobians by reverse mode, and the small dense linear algebra the diagnostics
//! need (singular values, eigenvalues, a linear solve), by `nalgebra`.

use nalgebra::DMatrix;
use ndarray::{Array2, ArrayD, Axis};
use serde::{Deserialize, Serialize};
use unrolled_autograd::{Error, Float, Graph, NodeId, Result};

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

/// The matrix in `nalgebra`'s form, or an error for a non-finite entry (the
/// iterative decompositions would not terminate on one).
fn to_na(a: &Array2<f64>, op: &'static str) -> Result<DMatrix<f64>> {
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidInput {
            op,
            scope: String::new(),
            reason: "the matrix has non-finite entries (did the run overflow?)".into(),
            shapes: vec![a.shape().to_vec()],
        });
    }
    Ok(DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]]))
}

/// The singular values of `a`, largest first.
///
/// ```
/// use ndarray::array;
/// let sv = unrolled_layers::diagnostics::singular_values(&array![[3.0, 0.0], [0.0, -4.0]])?;
/// assert_eq!(sv, vec![4.0, 3.0]);
/// # Ok::<(), unrolled_autograd::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for a matrix with a NaN or infinite entry.
pub fn singular_values(a: &Array2<f64>) -> Result<Vec<f64>> {
    if a.is_empty() {
        return Ok(Vec::new());
    }
    let mut sv: Vec<f64> = to_na(a, "singular_values")?.singular_values().iter().copied().collect();
    sv.sort_by(|x, y| y.total_cmp(x));
    Ok(sv)
}

/// A complex eigenvalue `re + i·im`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Eigenvalue {
    /// The real part.
    pub re: f64,
    /// The imaginary part.
    pub im: f64,
}

impl Eigenvalue {
    /// `|λ|`.
    pub fn modulus(self) -> f64 {
        self.re.hypot(self.im)
    }
}

/// The eigenvalues of a square matrix, largest modulus first (ties: larger real
/// part, then larger imaginary part first).
///
/// ```
/// use ndarray::array;
/// // A rotation by 90° scaled by 2: eigenvalues ±2i.
/// let ev = unrolled_layers::diagnostics::eigenvalues(&array![[0.0, -2.0], [2.0, 0.0]])?;
/// assert!((ev[0].im - 2.0).abs() < 1e-14 && (ev[1].im + 2.0).abs() < 1e-14);
/// assert!((ev[0].modulus() - 2.0).abs() < 1e-14);
/// # Ok::<(), unrolled_autograd::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for a matrix that is not square or has a non-finite entry.
pub fn eigenvalues(a: &Array2<f64>) -> Result<Vec<Eigenvalue>> {
    if a.nrows() != a.ncols() {
        return Err(Error::InvalidInput {
            op: "eigenvalues",
            scope: String::new(),
            reason: "needs a square matrix".into(),
            shapes: vec![a.shape().to_vec()],
        });
    }
    if a.is_empty() {
        return Ok(Vec::new());
    }
    let mut ev: Vec<Eigenvalue> =
        to_na(a, "eigenvalues")?.complex_eigenvalues().iter().map(|c| Eigenvalue { re: c.re, im: c.im }).collect();
    ev.sort_by(|x, y| y.modulus().total_cmp(&x.modulus()).then(y.re.total_cmp(&x.re)).then(y.im.total_cmp(&x.im)));
    Ok(ev)
}

/// Solves `a x = b` (LU with partial pivoting).
///
/// ```
/// use ndarray::array;
/// let x = unrolled_layers::diagnostics::solve(&array![[2.0, 0.0], [0.0, 4.0]], &[1.0, 1.0])?;
/// assert_eq!(x, vec![0.5, 0.25]);
/// # Ok::<(), unrolled_autograd::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for shapes that do not fit, a non-finite entry or a singular `a`.
pub fn solve(a: &Array2<f64>, b: &[f64]) -> Result<Vec<f64>> {
    let bad = |reason: &str| Error::InvalidInput {
        op: "solve",
        scope: String::new(),
        reason: reason.into(),
        shapes: vec![a.shape().to_vec(), vec![b.len()]],
    };
    if a.nrows() != a.ncols() || a.nrows() != b.len() {
        return Err(bad("needs a square matrix and a right-hand side of its size"));
    }
    if b.iter().any(|v| !v.is_finite()) {
        return Err(bad("the right-hand side has non-finite entries"));
    }
    let lu = to_na(a, "solve")?.lu();
    let x = lu.solve(&nalgebra::DVector::from_column_slice(b)).ok_or_else(|| bad("the matrix is singular"))?;
    if x.iter().any(|v| !v.is_finite()) {
        return Err(bad("the matrix is singular"));
    }
    Ok(x.iter().copied().collect())
}
