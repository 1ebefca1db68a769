//! Activations: tanh, sigmoid, relu, softmax, log-softmax, and dropout.

use ndarray::{ArrayD, Axis};
use serde::{Deserialize, Serialize};

use super::elementwise::unary_map;
use super::{arity, fin, grads, shape_of, Back, FResult, Fail, Grads, Op, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Value};

/// `tanh(x)`. d/dx = 1 - tanh(x)².
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tanh;

/// `sigmoid(x) = 1 / (1 + exp(-x))`. d/dx = s (1 - s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sigmoid;

/// `relu(x) = max(x, 0)`. d/dx = `[x > 0]` (0 at the kink, as PyTorch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relu;

#[inline(always)]
pub(crate) fn sigmoid<T: Float>(v: T) -> T {
    T::one() / (T::one() + (-v).exp_fast())
}

#[inline(always)]
pub(crate) fn tanh<T: Float>(v: T) -> T {
    v.tanh_fast()
}

#[inline(always)]
pub(crate) fn relu<T: Float>(v: T) -> T {
    if v > T::zero() {
        v
    } else {
        T::zero()
    }
}

impl<T: Float> Rule<T> for Tanh {
    unary_map!(Tanh, tanh);
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        grads([Some(g.activation_grad(super::ActivationKind::Tanh, b.out, b.grad)?)])
    }
}

impl<T: Float> Rule<T> for Sigmoid {
    unary_map!(Sigmoid, sigmoid);
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        grads([Some(g.activation_grad(super::ActivationKind::Sigmoid, b.out, b.grad)?)])
    }
}

impl<T: Float> Rule<T> for Relu {
    unary_map!(Relu, relu);
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let m = g.compare_scalar(b.inputs[0], super::Cmp::Gt, 0.0)?;
        grads([Some(g.mul(b.grad, m)?)])
    }
}

/// `softmax(x)` along `axis`: `exp(x_i - max) / sum_j exp(x_j - max)`.
/// d/dx (with upstream g) = y * (g - sum(g * y)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Softmax {
    /// The normalized axis.
    pub axis: usize,
}

/// `log_softmax(x)` along `axis`: `x_i - logsumexp(x)`, computed stably.
/// d/dx (with upstream g) = g - exp(y) * sum(g).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogSoftmax {
    /// The normalized axis.
    pub axis: usize,
}

fn axis_infer(shapes: &[&[usize]], axis: usize) -> FResult<Shape> {
    arity(shapes, 1)?;
    if axis >= shapes[0].len() {
        return Err(Fail::Invalid(format!("axis {axis} out of range for rank {}", shapes[0].len())));
    }
    Ok(shape_of(shapes[0]))
}

/// `f` folded over a row in eight interleaved lanes (so that it vectorizes), then
/// over the lanes and the remainder: a row's max or sum.
#[inline(always)]
fn fold8<T: Float>(row: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = f(acc[k], c[k]);
        }
    }
    rest.iter().fold(acc.iter().fold(init, |a, &v| f(a, v)), |a, &v| f(a, v))
}

fn lane_max<T: Float>(lane: &ndarray::ArrayViewMut1<T>) -> T {
    lane.iter().fold(T::neg_infinity(), |m, &v| if v > m { v } else { m })
}

impl<T: Float> Rule<T> for Softmax {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        axis_infer(s, self.axis)
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        let x = fin(x, 0);
        if let (Some(s), true) = (x.as_slice(), self.axis + 1 == x.ndim()) {
            // Row-major over the last axis (logits): each row in place, one vectorized
            // pass for the exponentials.
            let mut v = s.to_vec();
            let n = x.shape()[self.axis].max(1);
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for row in v.chunks_exact_mut(n) {
                        let m = fold8(row, T::neg_infinity(), |m, v| if v > m { v } else { m });
                        for e in row.iter_mut() {
                            // A masked (-inf) logit gets exactly 0, as `exp` gives.
                            let d = *e - m;
                            *e = if d == T::neg_infinity() { T::zero() } else { d.exp_fast() };
                        }
                        let s = fold8(row, T::zero(), |a, v| a + v);
                        for e in row.iter_mut() {
                            *e /= s;
                        }
                    }
                },
            );
            return Ok(ArrayD::from_shape_vec(x.raw_dim(), v).expect("sized"));
        }
        let mut out = x.to_owned();
        for mut lane in out.lanes_mut(Axis(self.axis)) {
            let m = lane_max(&lane);
            lane.mapv_inplace(|v| (v - m).exp());
            let s: T = lane.sum();
            lane.mapv_inplace(|v| v / s);
        }
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let gy = g.mul(b.grad, b.out)?;
        let s = g.sum(gy, &[self.axis as isize], true)?;
        let t = g.mul(b.out, s)?;
        grads([Some(g.sub(gy, t)?)])
    }
}

impl<T: Float> Rule<T> for LogSoftmax {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        axis_infer(s, self.axis)
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        let mut out = fin(x, 0).to_owned();
        for mut lane in out.lanes_mut(Axis(self.axis)) {
            let m = lane_max(&lane);
            let lse = m + lane.iter().map(|&v| (v - m).exp()).sum::<T>().ln();
            lane.mapv_inplace(|v| v - lse);
        }
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let s = g.sum(b.grad, &[self.axis as isize], true)?;
        let e = g.exp(b.out)?;
        let t = g.mul(e, s)?;
        grads([Some(g.sub(b.grad, t)?)])
    }
}

/// A seeded dropout mask: each element is `1/(1-p)` with probability `1-p`, else 0.
/// It has no inputs; a replay draws the same mask again (same seed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DropoutMask {
    /// The probability of dropping an element.
    pub p: f64,
    /// The seed of the mask.
    pub seed: u64,
    /// The mask's shape.
    pub shape: Vec<usize>,
}

impl<T: Float> Rule<T> for DropoutMask {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 0)?;
        if !(0.0..=1.0).contains(&self.p) {
            return Err(Fail::Invalid(format!("dropout probability {} is not in [0, 1]", self.p)));
        }
        Ok(shape_of(&self.shape))
    }
    fn forward(&self, _: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let mut rng = crate::rng::Rng::new(self.seed);
        let keep = if self.p < 1.0 { T::of(1.0 / (1.0 - self.p)) } else { T::zero() };
        let n: usize = shape.iter().product();
        let data = (0..n).map(|_| if rng.uniform() >= self.p { keep } else { T::zero() }).collect();
        Ok(ArrayD::from_shape_vec(shape, data).expect("sized"))
    }
    fn backward(&self, _: &mut Graph<T>, _: &Back) -> Result<Grads> {
        grads([])
    }
}

/// Builders: the activation family.
impl<T: Float> Graph<T> {
    /// `tanh(x)`. d/dx = 1 - tanh(x)².
    ///
    /// # Errors
    /// [`Error::ForeignNode`](crate::Error::ForeignNode) for another graph's id.
    pub fn tanh(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(Op::Tanh(Tanh), &[x])
    }
    /// `sigmoid(x) = 1/(1+exp(-x))`. d/dx = s(1-s).
    ///
    /// # Errors
    /// As [`Graph::tanh`].
    pub fn sigmoid(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(Op::Sigmoid(Sigmoid), &[x])
    }
    /// `relu(x) = max(x, 0)`. d/dx = `[x > 0]`.
    ///
    /// # Errors
    /// As [`Graph::tanh`].
    pub fn relu(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(Op::Relu(Relu), &[x])
    }
    /// Softmax along `axis` (negative counts from the end).
    /// d/dx = y ⊙ (g - Σ g ⊙ y).
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an axis out of range.
    pub fn softmax(&mut self, x: NodeId, axis: isize) -> Result<NodeId> {
        let axis = self.axis("softmax", x, axis)?;
        self.push(Op::Softmax(Softmax { axis }), &[x])
    }
    /// Log-softmax along `axis`, computed as `x - max - ln Σ exp(x - max)`.
    /// d/dx = g - exp(y) Σ g.
    ///
    /// # Errors
    /// As [`Graph::softmax`].
    pub fn log_softmax(&mut self, x: NodeId, axis: isize) -> Result<NodeId> {
        let axis = self.axis("log_softmax", x, axis)?;
        self.push(Op::LogSoftmax(LogSoftmax { axis }), &[x])
    }
    /// Inverted dropout with a seeded mask: `x * mask`, the kept elements scaled by
    /// `1/(1-p)` as PyTorch does in training mode. `p = 0` returns `x` unchanged.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) if `p` is not in [0, 1].
    pub fn dropout(&mut self, x: NodeId, p: f64, seed: u64) -> Result<NodeId> {
        self.check(x, "dropout")?;
        if p == 0.0 {
            return Ok(x);
        }
        let shape = self.shape_of(x).to_vec();
        let mask = self.push(Op::DropoutMask(DropoutMask { p, seed, shape }), &[])?;
        self.mul(x, mask)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::ops::column_major;

    /// The row-major softmax over the last axis against the general path (the same
    /// values laid out column-major), with rows longer and shorter than the 8 lanes.
    #[test]
    fn row_major_softmax_matches_the_general_path() {
        for shape in [[3usize, 19], [4, 5], [2, 8]] {
            let x = ArrayD::from_shape_fn(IxDyn(&shape), |i| ((i[0] * 31 + i[1] * 7) as f64).sin() * 3.0);
            let xc = column_major(&x);
            let op = Softmax { axis: 1 };
            let fast = Rule::<f64>::forward(&op, &[&Value::Float(x)], &shape).expect("valid");
            let general = Rule::<f64>::forward(&op, &[&Value::Float(xc)], &shape).expect("valid");
            for (a, b) in fast.iter().zip(&general) {
                assert!((a - b).abs() <= 1e-15 * b.abs(), "{shape:?}: {a} against {b}");
            }
        }
    }

    /// A masked logit (`-inf`) gets exactly 0 in `f32` too, where the fast `exp`
    /// saturates; the rest agree with the `f64` result.
    #[test]
    fn softmax_gives_masked_logits_exactly_zero() {
        let v = [0.5, f64::NEG_INFINITY, -1.0, 2.0, -100.0, 0.0, 1.0, -3.0, 0.25];
        let x64 = ArrayD::from_shape_vec(IxDyn(&[1, 9]), v.to_vec()).expect("sized");
        let x32 = x64.mapv(|v| v as f32);
        let op = Softmax { axis: 1 };
        let p64 = Rule::<f64>::forward(&op, &[&Value::Float(x64)], &[1, 9]).expect("valid");
        let p32 = Rule::<f32>::forward(&op, &[&Value::Float(x32)], &[1, 9]).expect("valid");
        assert_eq!((p64[[0, 1]], p32[[0, 1]]), (0.0, 0.0));
        for (a, b) in p32.iter().zip(&p64) {
            assert!((f64::from(*a) - b).abs() <= 1e-6 * b.abs() + 1e-30, "{a} against {b}");
        }
    }
}
