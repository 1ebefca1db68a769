//! Losses: softmax cross-entropy with integer targets (fused for numerical
//! stability) and mean squared error (fused: no `[…]`-sized intermediate in the
//! forward pass; its gradient is recorded as primitives).

use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use super::{arity, broadcast, fin, grads, shape_of, Back, FResult, Fail, Grads, Op, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Value};

/// How per-position losses are combined, as PyTorch's `reduction` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// The mean over all positions (PyTorch's default).
    Mean,
    /// The sum over all positions.
    Sum,
    /// No reduction: one loss per position.
    None,
}

/// Softmax cross-entropy with integer targets, as `torch.nn.functional.cross_entropy`
/// (no class weights, no label smoothing) with the classes on the **last** axis:
/// logits `S ++ [C]`, int64 targets `S`. For `[N, C]` this is PyTorch's layout; for
/// sequence-major logits `[T, B, C]` PyTorch would want `[B, C, T]`, we take them as they are.
/// `ce = logsumexp(z) - z[target]` per position, then reduced.
/// d/dz = (softmax(z) - onehot(target)) · g (divided by the count for `Mean`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossEntropy {
    /// The reduction.
    pub reduction: Reduction,
}

/// Mean squared error `mean((a - b)²)` over the broadcast shape of `a` and `b`, as
/// `torch.nn.functional.mse_loss`: a scalar, computed in one pass without the
/// difference or its square as tensors. d/da = 2 (a - b) g / n, d/db = -d/da,
/// recorded as `sub`, `mul` and `affine` nodes (so it can be differentiated again).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MseLoss;

impl<T: Float> Rule<T> for MseLoss {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        broadcast(s[0], s[1])?;
        Ok(Shape::new())
    }
    fn forward(&self, v: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        let (a, b) = (fin(v, 0), fin(v, 1));
        let (sum, n) = match (a.shape() == b.shape(), a.as_slice(), b.as_slice()) {
            (true, Some(a), Some(b)) => (squared_distance(a, b), a.len()),
            _ => {
                let d = &a - &b;
                (d.iter().map(|&x| x * x).fold(T::zero(), |s, x| s + x), d.len())
            }
        };
        Ok(ArrayD::from_elem(IxDyn(&[]), sum * T::of(1.0 / n as f64)))
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let (x, y) = (b.inputs[0], b.inputs[1]);
        let n: usize = broadcast(g.shape_of(x), g.shape_of(y)).expect("checked when recorded").iter().product();
        let d = g.sub(x, y)?;
        let up = g.mul_scalar(b.grad, 2.0 / n as f64)?;
        let gx = g.mul(d, up)?;
        let gy = if b.needs[1] { Some(g.neg(gx)?) } else { None };
        grads([b.needs[0].then_some(gx), gy])
    }
}

/// `Σ (a_i - b_i)²` over equal-length slices, in 16 interleaved partial sums (so the
/// pass vectorizes), added pairwise at the end.
fn squared_distance<T: Float>(a: &[T], b: &[T]) -> T {
    crate::simd::vectorized(
        #[inline(always)]
        || {
            let mut acc = [T::zero(); 16];
            let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
            let (ra, rb) = (ca.remainder(), cb.remainder());
            for (xa, xb) in ca.zip(cb) {
                for k in 0..16 {
                    let d = xa[k] - xb[k];
                    acc[k] += d * d;
                }
            }
            for (k, (&x, &y)) in ra.iter().zip(rb).enumerate() {
                let d = x - y;
                acc[k] += d * d;
            }
            let mut width = 16;
            while width > 1 {
                width /= 2;
                for k in 0..width {
                    acc[k] += acc[k + width];
                }
            }
            acc[0]
        },
    )
}

/// One-hot encoding of int64 indices `S` into floats `S ++ [classes]`; not differentiable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OneHot {
    /// The number of classes.
    pub classes: usize,
}

fn check_targets(t: &ArrayD<i64>, c: usize) -> FResult<()> {
    match t.iter().find(|&&i| i < 0 || i as usize >= c) {
        Some(&index) => Err(Fail::IndexRange { index, bound: c }),
        None => Ok(()),
    }
}

impl<T: Float> Rule<T> for CrossEntropy {
    fn index_inputs(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        let (z, t) = (s[0], s[1]);
        if z.is_empty() || z[..z.len() - 1] != *t {
            return Err(Fail::Mismatch(shape_of(z), shape_of(t)));
        }
        if z[z.len() - 1] == 0 {
            return Err(Fail::Invalid("no classes".into()));
        }
        Ok(match self.reduction {
            Reduction::None => shape_of(t),
            _ => Shape::new(),
        })
    }
    fn forward(&self, v: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (z, t) = (fin(v, 0), v[1].index());
        let c = *z.shape().last().expect("rank >= 1");
        check_targets(t, c)?;
        let last = Axis(z.ndim() - 1);
        let per: Vec<T> = z
            .lanes(last)
            .into_iter()
            .zip(t.iter())
            .map(|(lane, &k)| {
                let m = lane.iter().fold(T::neg_infinity(), |m, &x| if x > m { x } else { m });
                let lse = m + lane.iter().map(|&x| (x - m).exp()).sum::<T>().ln();
                lse - lane[k as usize]
            })
            .collect();
        let n = per.len();
        Ok(match self.reduction {
            Reduction::None => ArrayD::from_shape_vec(IxDyn(shape), per).expect("sized"),
            Reduction::Sum => ArrayD::from_elem(IxDyn(&[]), per.into_iter().sum()),
            Reduction::Mean => ArrayD::from_elem(IxDyn(&[]), per.into_iter().sum::<T>() / T::of(n as f64)),
        })
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let (z, t) = (b.inputs[0], b.inputs[1]);
        let c = *g.shape_of(z).last().expect("rank >= 1");
        let n: usize = g.shape_of(t).iter().product();
        let sm = g.softmax(z, -1)?;
        let oh = g.push(Op::OneHot(OneHot { classes: c }), &[t])?;
        let d = g.sub(sm, oh)?;
        let up = match self.reduction {
            Reduction::None => g.unsqueeze(b.grad, -1)?,
            Reduction::Sum => b.grad,
            Reduction::Mean => g.mul_scalar(b.grad, 1.0 / n as f64)?,
        };
        grads([Some(g.mul(d, up)?), None])
    }
}

impl<T: Float> Rule<T> for OneHot {
    fn index_inputs(&self) -> &'static [usize] {
        &[0]
    }
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        let mut out = shape_of(s[0]);
        out.push(self.classes);
        Ok(out)
    }
    fn forward(&self, v: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let t = v[0].index();
        check_targets(t, self.classes)?;
        let mut out = ArrayD::zeros(IxDyn(shape));
        let flat = out.as_slice_mut().expect("fresh array is contiguous");
        for (k, &i) in t.iter().enumerate() {
            flat[k * self.classes + i as usize] = T::one();
        }
        Ok(out)
    }
    fn backward(&self, _: &mut Graph<T>, _: &Back) -> Result<Grads> {
        grads([None])
    }
}

/// Builders: losses.
impl<T: Float> Graph<T> {
    /// Softmax cross-entropy of `logits` (`S ++ [C]`) against int64 `targets` (`S`),
    /// as `torch.nn.functional.cross_entropy` with the given reduction.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if the shapes do not fit,
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) for a target outside `0..C`.
    pub fn cross_entropy(&mut self, logits: NodeId, targets: NodeId, reduction: Reduction) -> Result<NodeId> {
        self.push(Op::CrossEntropy(CrossEntropy { reduction }), &[logits, targets])
    }

    /// One-hot floats `S ++ [classes]` from int64 indices `S`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) for an index outside `0..classes`.
    pub fn one_hot(&mut self, idx: NodeId, classes: usize) -> Result<NodeId> {
        self.push(Op::OneHot(OneHot { classes }), &[idx])
    }

    /// Mean squared error `mean((a - b)²)`, as `torch.nn.functional.mse_loss`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if the shapes do not broadcast.
    pub fn mse_loss(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(Op::MseLoss(MseLoss), &[a, b])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Graph;
    use ndarray::{ArrayD, IxDyn};

    /// The fused loss against the same formula composed of primitives, on the vector
    /// pass with a remainder and on a broadcast.
    #[test]
    fn mse_loss_equals_the_composed_formula() -> crate::Result<()> {
        for (sa, sb) in [(vec![5, 7], vec![5, 7]), (vec![3, 7], vec![7]), (vec![1], vec![1])] {
            let mut g = Graph::<f64>::new();
            let fill = |s: &[usize], k: f64| {
                let n: usize = s.iter().product();
                ArrayD::from_shape_vec(IxDyn(s), (0..n).map(|i| (i as f64 * k).sin()).collect()).expect("sized")
            };
            let a = g.input(fill(&sa, 0.7));
            let b = g.input(fill(&sb, 1.3));
            let fused = g.mse_loss(a, b)?;
            let d = g.sub(a, b)?;
            let sq = g.square(d)?;
            let composed = g.mean_all(sq)?;
            let (f, c) = (g.value(fused)?.sum(), g.value(composed)?.sum());
            assert!((f - c).abs() <= 1e-15 * c.abs(), "{sa:?} {sb:?}: {f} against {c}");
        }
        Ok(())
    }
}
