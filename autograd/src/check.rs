//! Gradient checking for users: central differences in f64 against the recorded
//! reverse mode, first and second order, with a per-element report on failure.

use std::fmt;

use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::node::NodeId;
use crate::rng::Rng;

/// Settings of [`gradcheck`] and [`gradgradcheck`]; the defaults are PyTorch's.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance: an element passes when `|analytic - numeric| <= atol + rtol·|numeric|`.
    pub rtol: f64,
    /// Seed of the random projection of a non-scalar output (and of the second-order direction).
    pub seed: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { eps: 1e-6, atol: 1e-5, rtol: 1e-3, seed: 0 }
    }
}

/// One checked element whose derivatives disagree.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ElementCheck {
    /// Which input (position in the `inputs` slice).
    pub input: usize,
    /// The element's index in that input.
    pub index: Vec<usize>,
    /// The derivative from reverse mode.
    pub analytic: f64,
    /// The central-difference estimate.
    pub numeric: f64,
}

/// What a gradient check found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GradcheckReport {
    /// 1 for [`gradcheck`], 2 for [`gradgradcheck`].
    pub order: u8,
    /// How many elements were checked.
    pub checked: usize,
    /// The largest `|analytic - numeric|`.
    pub max_abs_err: f64,
    /// The largest `|analytic - numeric| / max(|numeric|, 1e-12)` … over elements with `|numeric| > atol`.
    pub max_rel_err: f64,
    /// The elements outside the tolerance.
    pub failures: Vec<ElementCheck>,
    /// The tolerances used.
    pub atol: f64,
    /// The tolerances used.
    pub rtol: f64,
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.order == 1 { "gradcheck" } else { "gradgradcheck" };
        writeln!(
            f,
            "{what} failed: {} of {} elements disagree (atol {:e}, rtol {:e}; max abs err {:e})",
            self.failures.len(),
            self.checked,
            self.atol,
            self.rtol,
            self.max_abs_err
        )?;
        for e in self.failures.iter().take(20) {
            writeln!(f, "  input {} {:?}: analytic {:e}, numeric {:e}", e.input, e.index, e.analytic, e.numeric)?;
        }
        if self.failures.len() > 20 {
            writeln!(f, "  … {} more", self.failures.len() - 20)?;
        }
        Ok(())
    }
}

fn random_like(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut rng = Rng::new(seed ^ 0x5EED_0FC0_FFEE);
    let n = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect()).expect("sized")
}

/// Reduces `y` to a scalar: itself if it has one element, else `Σ y ⊙ w` with fixed
/// random weights `w`, so every output element is checked through one projection.
fn scalarize(g: &mut Graph<f64>, y: NodeId, seed: u64) -> Result<NodeId> {
    let shape = g.shape(y)?.to_vec();
    if shape.iter().product::<usize>() == 1 {
        return g.sum_all(y);
    }
    let w = g.constant(random_like(&shape, seed));
    let p = g.mul(y, w)?;
    g.sum_all(p)
}

fn evaluate<F>(f: &F, inputs: &[ArrayD<f64>]) -> Result<(Graph<f64>, Vec<NodeId>, NodeId)>
where
    F: Fn(&mut Graph<f64>, &[NodeId]) -> Result<NodeId>,
{
    let mut g = Graph::new();
    let ids: Vec<NodeId> = inputs.iter().map(|x| g.input(x.clone())).collect();
    let out = f(&mut g, &ids)?;
    Ok((g, ids, out))
}

fn check_with<F>(f: F, inputs: &[ArrayD<f64>], opts: &CheckOptions, order: u8) -> Result<GradcheckReport>
where
    F: Fn(&mut Graph<f64>, &[NodeId]) -> Result<NodeId>,
{
    let scalar = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
        let y = f(g, ids)?;
        scalarize(g, y, opts.seed)
    };
    let (mut g, ids, loss) = evaluate(&scalar, inputs)?;
    let grads = g.grad(loss, &ids)?;
    let analytic: Vec<ArrayD<f64>> = grads.iter().map(|&d| g.value(d).map(|v| v.to_owned())).collect::<Result<_>>()?;

    let mut report = GradcheckReport {
        order,
        checked: 0,
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        failures: Vec::new(),
        atol: opts.atol,
        rtol: opts.rtol,
    };
    let mut xs = inputs.to_vec();
    for (i, a) in analytic.iter().enumerate() {
        let indices: Vec<IxDyn> = a.indexed_iter().map(|(p, _)| p).collect();
        for p in indices {
            let orig = xs[i][&p];
            xs[i][&p] = orig + opts.eps;
            let (gp, _, lp) = evaluate(&scalar, &xs)?;
            let fp = gp.scalar_value(lp)?;
            xs[i][&p] = orig - opts.eps;
            let (gm, _, lm) = evaluate(&scalar, &xs)?;
            let fm = gm.scalar_value(lm)?;
            xs[i][&p] = orig;
            let numeric = (fp - fm) / (2.0 * opts.eps);
            let analytic = a[&p];
            let err = (analytic - numeric).abs();
            report.checked += 1;
            report.max_abs_err = report.max_abs_err.max(err);
            if numeric.abs() > opts.atol {
                report.max_rel_err = report.max_rel_err.max(err / numeric.abs());
            }
            let within = err <= opts.atol + opts.rtol * numeric.abs();
            if !within {
                report.failures.push(ElementCheck {
                    input: i,
                    index: ndarray::Dimension::slice(&p).to_vec(),
                    analytic,
                    numeric,
                });
            }
        }
    }
    if report.failures.is_empty() {
        Ok(report)
    } else {
        Err(Error::GradcheckFailed(Box::new(report)))
    }
}

/// Checks the reverse-mode gradient of a user's graph against central differences.
///
/// `f` records a computation of the `inputs` (given as input nodes) into a fresh
/// `Graph<f64>` and returns its output. A non-scalar output is reduced with fixed
/// random weights. Every element of every input is perturbed by `±eps`.
///
/// ```
/// use ndarray::arr2;
/// use unrolled_autograd::{gradcheck, CheckOptions};
/// let x = arr2(&[[0.3, -0.2], [0.5, 0.1]]).into_dyn();
/// let report = gradcheck(
///     |g, x| { let t = g.tanh(x[0])?; g.matmul(t, x[0]) },
///     &[x],
///     &CheckOptions::default(),
/// ).unwrap();
/// assert_eq!(report.checked, 4);
/// ```
///
/// # Errors
/// [`Error::GradcheckFailed`] with the per-element report if any element is outside
/// the tolerance; any error `f` returns.
pub fn gradcheck<F>(f: F, inputs: &[ArrayD<f64>], opts: &CheckOptions) -> Result<GradcheckReport>
where
    F: Fn(&mut Graph<f64>, &[NodeId]) -> Result<NodeId>,
{
    check_with(f, inputs, opts, 1)
}

/// Checks second-order derivatives: the gradient of `⟨∇L, v⟩` (a Hessian-vector
/// product, `L` the scalarized output, `v` a fixed random direction), computed by
/// differentiating the recorded backward pass, against central differences of the
/// first-order gradient.
///
/// # Errors
/// As [`gradcheck`].
pub fn gradgradcheck<F>(f: F, inputs: &[ArrayD<f64>], opts: &CheckOptions) -> Result<GradcheckReport>
where
    F: Fn(&mut Graph<f64>, &[NodeId]) -> Result<NodeId>,
{
    let dirs: Vec<ArrayD<f64>> =
        inputs.iter().enumerate().map(|(i, x)| random_like(x.shape(), opts.seed.wrapping_add(1 + i as u64))).collect();
    let hvp = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
        let y = f(g, ids)?;
        let l = scalarize(g, y, opts.seed)?;
        let grads = g.grad(l, ids)?;
        let mut acc: Option<NodeId> = None;
        for (d, v) in grads.into_iter().zip(&dirs) {
            let v = g.constant(v.clone());
            let p = g.mul(d, v)?;
            let s = g.sum_all(p)?;
            acc = Some(match acc {
                None => s,
                Some(a) => g.add(a, s)?,
            });
        }
        match acc {
            Some(a) => Ok(a),
            None => Ok(g.zeros(&[])),
        }
    };
    check_with(hvp, inputs, opts, 2)
}
