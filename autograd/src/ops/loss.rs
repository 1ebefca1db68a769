//! Losses: softmax cross-entropy with integer targets (fused for numerical
//! stability) and mean squared error (composed).

use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use super::{arity, fin, grads, shape_of, Back, FResult, Fail, Grads, Op, Rule};
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
        let d = self.sub(a, b)?;
        let sq = self.square(d)?;
        self.mean_all(sq)
    }
}
