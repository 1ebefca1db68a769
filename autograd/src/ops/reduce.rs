//! Reductions: sum, mean, max over axes or everything, and `sum_to` (the
//! reduction the engine uses to bring a broadcast gradient back to its input's shape).

use ndarray::{ArrayBase, ArrayD, ArrayViewD, Axis, Data, IxDyn, Zip};
use serde::{Deserialize, Serialize};

use super::{arity, broadcast, fin, grads, shape_of, Back, FResult, Fail, Grads, Op, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Value};

/// Sum over `axes` (sorted, distinct). d/dx = g broadcast back over the summed axes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sum {
    /// The reduced axes.
    pub axes: Vec<usize>,
    /// Whether reduced axes stay with size 1.
    pub keepdim: bool,
}

/// Max over `axes`. d/dx = g where x attains the max, shared evenly between ties
/// (as PyTorch's `amax`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Max {
    /// The reduced axes.
    pub axes: Vec<usize>,
    /// Whether reduced axes stay with size 1.
    pub keepdim: bool,
}

/// The mask of the maxima of `x` over `axes`, each divided by the number of ties;
/// not differentiable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaxMask {
    /// The reduced axes.
    pub axes: Vec<usize>,
}

/// `x` summed down to `shape`, the inverse of broadcasting: leading axes are summed
/// away and axes of size 1 in `shape` are summed with keepdim. d/dx = broadcast_to(g, x.shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SumTo {
    /// The target shape.
    pub shape: Vec<usize>,
}

fn reduced_shape(x: &[usize], axes: &[usize], keepdim: bool) -> FResult<Shape> {
    if let Some(&a) = axes.iter().find(|&&a| a >= x.len()) {
        return Err(Fail::Invalid(format!("axis {a} out of range for rank {}", x.len())));
    }
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Fail::Invalid(format!("axes {axes:?} are not strictly increasing")));
    }
    Ok(x.iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdim) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect())
}

fn reduce<T: Float, S: Data<Elem = T>>(
    x: &ArrayBase<S, IxDyn>,
    axes: &[usize],
    keepdim: bool,
    f: impl Fn(ndarray::ArrayViewD<T>, Axis) -> ArrayD<T>,
) -> ArrayD<T> {
    let mut v = x.to_owned();
    for &a in axes.iter().rev() {
        let r = f(v.view(), Axis(a));
        v = if keepdim { r.insert_axis(Axis(a)) } else { r };
    }
    v
}

/// The max along an axis; NaN propagates, as in PyTorch.
fn max_axis<T: Float>(v: ndarray::ArrayViewD<T>, a: Axis) -> ArrayD<T> {
    v.fold_axis(a, T::neg_infinity(), |&m, &x| {
        if m.is_nan() || x <= m {
            m
        } else {
            x // greater, or NaN
        }
    })
}

impl<T: Float> Rule<T> for Sum {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        reduced_shape(s[0], &self.axes, self.keepdim)
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        Ok(reduce(&fin(x, 0), &self.axes, self.keepdim, |v, a| v.sum_axis(a)))
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let xs = g.shape_of(b.inputs[0]).to_vec();
        let kept = reduced_shape(&xs, &self.axes, true).expect("checked");
        let gk = g.reshape(b.grad, &kept)?;
        grads([Some(g.broadcast_to(gk, &xs)?)])
    }
}

impl<T: Float> Rule<T> for Max {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        if let Some(&a) = self.axes.iter().find(|&&a| a < s[0].len() && s[0][a] == 0) {
            return Err(Fail::Invalid(format!("max over axis {a} of size 0")));
        }
        reduced_shape(s[0], &self.axes, self.keepdim)
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        Ok(reduce(&fin(x, 0), &self.axes, self.keepdim, max_axis))
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let x = b.inputs[0];
        let xs = g.shape_of(x).to_vec();
        let kept = reduced_shape(&xs, &self.axes, true).expect("checked");
        let gk = g.reshape(b.grad, &kept)?;
        let gb = g.broadcast_to(gk, &xs)?;
        let m = g.push(Op::MaxMask(MaxMask { axes: self.axes.clone() }), &[x])?;
        grads([Some(g.mul(gb, m)?)])
    }
}

impl<T: Float> Rule<T> for MaxMask {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        reduced_shape(s[0], &self.axes, true)?;
        Ok(shape_of(s[0]))
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let x = fin(x, 0);
        let m = reduce(&x, &self.axes, true, max_axis);
        let mut mask = ArrayD::zeros(shape);
        let mb = m.broadcast(IxDyn(shape)).expect("keepdim");
        Zip::from(&mut mask).and(x).and(&mb).for_each(|o, &v, &m| *o = if v == m { T::one() } else { T::zero() });
        let count = reduce(&mask, &self.axes, true, |v, a| v.sum_axis(a));
        Ok(mask / &count)
    }
    fn backward(&self, _: &mut Graph<T>, _: &Back) -> Result<Grads> {
        grads([None])
    }
}

impl<T: Float> Rule<T> for SumTo {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        match broadcast(&self.shape, s[0]) {
            Ok(b) if b[..] == *s[0] => Ok(shape_of(&self.shape)),
            _ => Err(Fail::Mismatch(shape_of(s[0]), shape_of(&self.shape))),
        }
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        Ok(sum_to(&fin(x, 0), &self.shape))
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let s = g.shape_of(b.inputs[0]).to_vec();
        grads([Some(g.broadcast_to(b.grad, &s)?)])
    }
}

/// Rows of a bias gradient summed as one block: a sum over more rows adds the block
/// sums in block order. The blocks do not depend on the number of threads, so
/// neither do the values.
pub(crate) const SUM_BLOCK_ROWS: usize = 256;

pub(crate) fn sum_to<T: Float>(x: &ArrayViewD<'_, T>, shape: &[usize]) -> ArrayD<T> {
    let lead = x.ndim() - shape.len();
    let len: usize = shape.iter().product();
    // Leading axes only (a bias gradient): the column sums of a row-major buffer.
    if let (true, Some(s), true) = (x.shape()[lead..] == *shape, x.as_slice(), len > 0) {
        return ArrayD::from_shape_vec(IxDyn(shape), column_sums(s, len)).expect("sized");
    }
    let mut v = if lead == 0 { x.to_owned() } else { x.sum_axis(Axis(0)) };
    for _ in 1..lead {
        v = v.sum_axis(Axis(0));
    }
    for (a, &d) in shape.iter().enumerate() {
        if d == 1 && v.shape()[a] != 1 {
            v = v.sum_axis(Axis(a)).insert_axis(Axis(a));
        }
    }
    v
}

/// The column sums of `s`'s rows of `len`: each block of [`SUM_BLOCK_ROWS`] rows in
/// row order, then the blocks' sums in block order.
///
/// Many blocks are split over the engine's threads by blocks, so that each thread reads
/// whole rows in a row, each block's sums whole cache lines apart from the next's; a
/// single block by columns, each thread adding into sums of its own padded by a cache
/// line on each side and writing them out once (summing in place, two threads would
/// write the cache line where their shares meet at every row).
fn column_sums<T: Float>(s: &[T], len: usize) -> Vec<T> {
    // Adds the `[first, first + sums.len())` columns of `rows` (each `stride` apart) into `sums`.
    let add_rows = |sums: &mut [T], rows: &[T], stride: usize, first: usize| {
        let n = sums.len();
        crate::simd::vectorized(
            #[inline(always)]
            || {
                for row in rows.chunks(stride) {
                    crate::simd::update1(sums, &row[first..first + n], |a, v| a + v);
                }
            },
        );
    };
    let pad = 64 / std::mem::size_of::<T>();
    let block = SUM_BLOCK_ROWS * len;
    let mut acc = vec![T::zero(); len];
    if s.len() <= block {
        crate::gemm::for_rows_of(&mut acc, 1, s.len(), &|first, cols| {
            if cols.len() == len {
                add_rows(cols, s, len, 0); // one share: no other thread writes near
                return;
            }
            let mut own = vec![T::zero(); cols.len() + 2 * pad];
            let sums = &mut own[pad..pad + cols.len()];
            add_rows(sums, s, len, first);
            cols.copy_from_slice(sums);
        });
        return acc;
    }
    // A block's sums a whole number of cache lines apart from the next block's.
    let stride = len.next_multiple_of(pad);
    let mut partial = vec![T::zero(); s.len().div_ceil(block) * stride];
    crate::gemm::for_rows_of(&mut partial, stride, s.len(), &|first, sums| {
        for (b, out) in sums.chunks_exact_mut(stride).enumerate() {
            let at = (first + b) * block;
            add_rows(&mut out[..len], &s[at..(at + block).min(s.len())], len, 0);
        }
    });
    add_rows(&mut acc, &partial, stride, 0);
    acc
}

/// Builders: the reduction family.
impl<T: Float> Graph<T> {
    /// Normalized, sorted, distinct axes; an empty list means every axis, as in PyTorch.
    fn axes(&self, op: &'static str, x: NodeId, axes: &[isize]) -> Result<Vec<usize>> {
        self.check(x, op)?;
        if axes.is_empty() {
            return Ok((0..self.shape_of(x).len()).collect());
        }
        let mut out = axes.iter().map(|&a| self.axis(op, x, a)).collect::<Result<Vec<_>>>()?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
    /// Sum over `axes` (negative count from the end; empty means all, as PyTorch). d/dx = g broadcast back.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an axis out of range.
    pub fn sum(&mut self, x: NodeId, axes: &[isize], keepdim: bool) -> Result<NodeId> {
        let axes = self.axes("sum", x, axes)?;
        self.push(Op::Sum(Sum { axes, keepdim }), &[x])
    }
    /// Sum of every element, as a 0-d node.
    ///
    /// # Errors
    /// [`Error::ForeignNode`](crate::Error::ForeignNode) for another graph's id.
    pub fn sum_all(&mut self, x: NodeId) -> Result<NodeId> {
        self.check(x, "sum_all")?;
        let axes = (0..self.shape_of(x).len()).collect();
        self.push(Op::Sum(Sum { axes, keepdim: false }), &[x])
    }
    /// Mean over `axes`. d/dx = g / n broadcast back.
    ///
    /// # Errors
    /// As [`Graph::sum`].
    pub fn mean(&mut self, x: NodeId, axes: &[isize], keepdim: bool) -> Result<NodeId> {
        let ax = self.axes("mean", x, axes)?;
        let n: usize = ax.iter().map(|&a| self.shape_of(x)[a]).product();
        let s = self.push(Op::Sum(Sum { axes: ax, keepdim }), &[x])?;
        self.mul_scalar(s, 1.0 / n as f64)
    }
    /// Mean of every element, as a 0-d node.
    ///
    /// # Errors
    /// As [`Graph::sum_all`].
    pub fn mean_all(&mut self, x: NodeId) -> Result<NodeId> {
        self.check(x, "mean_all")?;
        let n: usize = self.shape_of(x).iter().product();
        let s = self.sum_all(x)?;
        self.mul_scalar(s, 1.0 / n as f64)
    }
    /// Max over `axes`; ties share the gradient evenly (PyTorch's `amax`).
    ///
    /// # Errors
    /// As [`Graph::sum`]; [`Error::InvalidInput`](crate::Error::InvalidInput) over an empty axis.
    pub fn max(&mut self, x: NodeId, axes: &[isize], keepdim: bool) -> Result<NodeId> {
        let axes = self.axes("max", x, axes)?;
        self.push(Op::Max(Max { axes, keepdim }), &[x])
    }
    /// Max of every element, as a 0-d node.
    ///
    /// # Errors
    /// As [`Graph::max`].
    pub fn max_all(&mut self, x: NodeId) -> Result<NodeId> {
        self.check(x, "max_all")?;
        let axes = (0..self.shape_of(x).len()).collect();
        self.push(Op::Max(Max { axes, keepdim: false }), &[x])
    }
    /// `x` summed down to `shape` (the inverse of broadcasting).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if `shape` does not broadcast to `x`'s shape.
    pub fn sum_to(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        self.check(x, "sum_to")?;
        if self.shape_of(x) == shape {
            return Ok(x);
        }
        self.push(Op::SumTo(SumTo { shape: shape.to_vec() }), &[x])
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, Axis, IxDyn};

    use super::{sum_to, SUM_BLOCK_ROWS};

    /// A bias gradient's column sums add the rows of each block of `SUM_BLOCK_ROWS` in
    /// row order and then the blocks in order, whatever the size (a single block split
    /// over the engine's threads by columns, more by blocks).
    #[test]
    fn column_sums_add_rows_in_order() {
        for (rows, cols) in [(0, 3), (3, 5), (256, 77), (257, 1), (512, 77), (517, 77), (40, 2049), (700, 600)] {
            let x =
                ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |i| ((i[0] * 31 + i[1] * 17) % 101) as f32 * 0.013 - 0.6);
            let got = sum_to(&x.view(), &[cols]);
            for (j, g) in got.iter().enumerate() {
                let column: Vec<f32> = x.index_axis(Axis(1), j).iter().copied().collect();
                let want = if rows <= SUM_BLOCK_ROWS {
                    column.iter().fold(0.0f32, |s, &v| s + v)
                } else {
                    let block = |b: &[f32]| b.iter().fold(0.0f32, |s, &v| s + v);
                    column.chunks(SUM_BLOCK_ROWS).map(block).fold(0.0f32, |s, v| s + v)
                };
                assert_eq!(g.to_bits(), want.to_bits(), "{rows}x{cols}, column {j}");
            }
        }
    }
}
