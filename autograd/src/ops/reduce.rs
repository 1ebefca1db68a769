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
/// neither do the values; and a fused gradient kernel whose threads each write whole
/// blocks of rows can sum its blocks as it writes them (see `graph/summed.rs`).
pub(crate) const SUM_BLOCK_ROWS: usize = 32;

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

/// Adds `row` into `sums`, the sums of its block of [`SUM_BLOCK_ROWS`] rows, as
/// [`column_sums`] does: `first` (the block's first row) adds it to zeros.
#[inline(always)]
pub(crate) fn add_to_block<T: Float>(sums: &mut [T], row: &[T], first: bool) {
    if first {
        crate::simd::map1(sums, row, |v| T::zero() + v);
    } else {
        crate::simd::update1(sums, row, |a, v| a + v);
    }
}

/// Where a fused gradient kernel adds the rows it writes, block by block of
/// [`SUM_BLOCK_ROWS`] rows, as [`column_sums`] would add them: block `b`'s sums at
/// `b · width` from the pointer (see `graph/summed.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockSums<T>(pub(crate) *mut T);

// SAFETY: the kernel's threads write disjoint blocks' sums through the pointer (each
// share of rows a whole number of blocks, see `BlockSums::add`).
unsafe impl<T: Send> Sync for BlockSums<T> {}

impl<T: Float> BlockSums<T> {
    /// Adds `count` rows from row `first` (`rows`, each `stride` apart; the columns
    /// `at..at + n` of each) into their blocks' sums (rows of `width`, the same
    /// columns), each column in row order from zero within a block, as
    /// [`column_sums`] adds them: a few columns at a time over a block's rows, the
    /// sums in registers, once the rows are written (and in the cache).
    ///
    /// # Safety
    /// `first` is a block's first row; the sums of the blocks of rows
    /// `first..first + count` lie in the buffer, and only the caller writes them.
    #[inline(always)]
    pub(crate) unsafe fn add_rows(
        &self,
        (first, count): (usize, usize),
        rows: &[T],
        stride: usize,
        (at, n): (usize, usize),
        width: usize,
    ) {
        const CHUNK: usize = 128;
        for b in (0..count).step_by(SUM_BLOCK_ROWS) {
            let end = (b + SUM_BLOCK_ROWS).min(count);
            // SAFETY: as the caller's contract.
            let sums =
                unsafe { std::slice::from_raw_parts_mut(self.0.add((first + b) / SUM_BLOCK_ROWS * width + at), n) };
            let mut c = 0;
            while c + CHUNK <= n {
                let mut acc = [T::zero(); CHUNK];
                for r in b..end {
                    let row: &[T; CHUNK] = rows[r * stride + at + c..][..CHUNK].try_into().expect("a chunk");
                    for j in 0..CHUNK {
                        acc[j] += row[j];
                    }
                }
                sums[c..c + CHUNK].copy_from_slice(&acc);
                c += CHUNK;
            }
            let rest = &mut sums[c..];
            rest.fill(T::zero());
            for r in b..end {
                let row = &rows[r * stride + at + c..][..rest.len()];
                for (s, &v) in rest.iter_mut().zip(row) {
                    *s += v;
                }
            }
        }
    }

    /// Copies the first `n` sums of the blocks of rows `first..first + count` in
    /// `from` into the same blocks' here (rows of `width` in both): columns whose
    /// rows are equal in both.
    ///
    /// # Safety
    /// As [`BlockSums::add_rows`]'s, for both; the two do not overlap.
    #[inline(always)]
    pub(crate) unsafe fn copy_from(&self, from: &BlockSums<T>, (first, count): (usize, usize), width: usize, n: usize) {
        for b in (0..count).step_by(SUM_BLOCK_ROWS) {
            let at = (first + b) / SUM_BLOCK_ROWS * width;
            // SAFETY: as the caller's contract.
            unsafe { std::ptr::copy_nonoverlapping(from.0.add(at), self.0.add(at), n) };
        }
    }
}

/// The block sums a fused gradient kernel adds its rows into: its own output's
/// (`lead`) and its sibling's (see `graph/paired.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowSums<T> {
    pub(crate) lead: Option<BlockSums<T>>,
    pub(crate) sibling: Option<BlockSums<T>>,
}

impl<T> RowSums<T> {
    /// No sums.
    pub(crate) const NONE: Self = RowSums { lead: None, sibling: None };

    /// The alignment of the kernel's shares of rows: whole blocks when it sums.
    pub(crate) fn align(&self) -> usize {
        if self.lead.is_some() || self.sibling.is_some() {
            SUM_BLOCK_ROWS
        } else {
            1
        }
    }
}

/// The column sums of rows of `len` from the sums of their blocks of
/// [`SUM_BLOCK_ROWS`] rows (`blocks` rows of sums, each `stride` apart): the one
/// block's own, else every block's added to zeros in block order.
pub(crate) fn sum_blocks<T: Float>(blocks: &[T], len: usize, stride: usize) -> Vec<T> {
    if blocks.len() <= stride {
        return blocks[..len].to_vec();
    }
    let mut acc = vec![T::zero(); len];
    crate::simd::vectorized(
        #[inline(always)]
        || {
            for b in blocks.chunks(stride) {
                crate::simd::update1(&mut acc, &b[..len], |a, v| a + v);
            }
        },
    );
    acc
}

/// The column sums of `s`'s rows of `len`: each block of [`SUM_BLOCK_ROWS`] rows in
/// row order, then the blocks' sums in block order ([`sum_blocks`]).
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
                for (r, row) in rows.chunks(stride).enumerate() {
                    add_to_block(sums, &row[first..first + n], r == 0);
                }
            },
        );
    };
    let pad = 64 / std::mem::size_of::<T>();
    let block = SUM_BLOCK_ROWS * len;
    if s.len() <= block {
        let mut acc = vec![T::zero(); len];
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
    sum_blocks(&partial, len, stride)
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

    use super::{sum_blocks, sum_to, BlockSums, SUM_BLOCK_ROWS};

    /// A bias gradient's column sums add the rows of each block of `SUM_BLOCK_ROWS` in
    /// row order and then the blocks in order, whatever the size (a single block split
    /// over the engine's threads by columns, more by blocks).
    #[test]
    fn column_sums_add_rows_in_order() {
        for (rows, cols) in
            [(0, 3), (3, 5), (32, 77), (33, 1), (64, 1536), (256, 77), (257, 1), (517, 77), (40, 2049), (700, 600)]
        {
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

    /// A kernel's rows added block by block ([`BlockSums::add_rows`], shares of whole
    /// blocks, some columns of each row) and the blocks then summed give the column
    /// sums of those columns, bit for bit.
    #[test]
    fn rows_added_by_blocks_give_the_column_sums() {
        fn check<T: crate::float::Float + std::fmt::Debug>() {
            // Rows, width, the columns summed, the rows of each share.
            for (rows, width, (at, n), share) in [
                (64, 300, (0, 300), 32),
                (64, 300, (200, 100), 64),
                (70, 257, (1, 256), 64),
                (5, 9, (0, 9), 5),
                (96, 40, (8, 32), 32),
            ] {
                let x = ArrayD::from_shape_fn(IxDyn(&[rows, width]), |i| {
                    T::of(((i[0] * 31 + i[1] * 17) % 101) as f64 * 0.013 - 0.6)
                });
                let cols = x.slice_axis(Axis(1), (at..at + n).into()).to_owned();
                let want = sum_to(&cols.view(), &[n]);
                let mut sums = vec![T::zero(); rows.div_ceil(SUM_BLOCK_ROWS) * width];
                let to = BlockSums(sums.as_mut_ptr());
                let flat = x.as_slice().expect("row-major");
                for first in (0..rows).step_by(share) {
                    let count = share.min(rows - first);
                    // SAFETY: `first` is a block's first row, the sums cover every block.
                    unsafe { to.add_rows((first, count), &flat[first * width..], width, (at, n), width) };
                }
                let blocks: Vec<T> = sums.chunks(width).flat_map(|b| b[at..at + n].to_vec()).collect();
                let got = sum_blocks(&blocks, n, n);
                for (j, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                    assert_eq!(g.f64().to_bits(), w.f64().to_bits(), "{rows}x{width}, columns {at}+{n}, column {j}");
                }
            }
        }
        check::<f32>();
        check::<f64>();
    }
}
