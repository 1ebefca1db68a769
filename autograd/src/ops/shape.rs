//! Shape ops: reshape, permute/transpose, concat/stack, narrow/split, pad, broadcast.

use ndarray::{ArrayD, ArrayViewMutD, Axis, IxDyn, Slice};
use serde::{Deserialize, Serialize};

use super::fresh::filled;
use super::{arity, broadcast, fin, grads, shape_of, Back, FResult, Fail, Grads, Op, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{with_float, NodeId, Shape, Tensor, Value};

/// The same elements in row-major order under a new shape. d/dx = reshape(g, x.shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reshape {
    /// The new shape.
    pub shape: Vec<usize>,
}

impl<T: Float> Rule<T> for Reshape {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        let (n, m) = (s[0].iter().product::<usize>(), super::numel(&self.shape)?);
        if n != m {
            return Err(Fail::Invalid(format!("cannot reshape {n} elements to {:?} ({m} elements)", self.shape)));
        }
        Ok(shape_of(&self.shape))
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        Ok(fin(x, 0).to_shape(IxDyn(shape)).expect("sizes checked").into_owned())
    }
    fn views(&self, _: &[usize]) -> bool {
        true
    }
    fn forward_view(&self, x: &Tensor<T>, shape: &[usize]) -> Tensor<T> {
        x.clone()
            .into_shape_with_order(IxDyn(shape))
            .expect("a row-major buffer reshapes to the same number of elements")
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let s = g.shape_of(b.inputs[0]).to_vec();
        grads([Some(g.reshape(b.grad, &s)?)])
    }
}

/// Axes reordered: output axis `i` is input axis `axes[i]`. d/dx = permute(g, axes⁻¹).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Permute {
    /// The permutation.
    pub axes: Vec<usize>,
}

impl<T: Float> Rule<T> for Permute {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        let n = s[0].len();
        let mut seen = vec![false; n];
        if self.axes.len() != n || self.axes.iter().any(|&a| a >= n || std::mem::replace(&mut seen[a], true)) {
            return Err(Fail::Invalid(format!("{:?} is not a permutation of the {n} axes", self.axes)));
        }
        Ok(self.axes.iter().map(|&a| s[0][a]).collect())
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        Ok(fin(x, 0).view().permuted_axes(IxDyn(&self.axes)).as_standard_layout().into_owned())
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let mut inv = vec![0; self.axes.len()];
        for (i, &a) in self.axes.iter().enumerate() {
            inv[a] = i;
        }
        grads([Some(g.permute(b.grad, &inv)?)])
    }
}

/// The fast paths of `stack` and `concat`: a small result of row-major parts as slice
/// copies, any other join on the first axis of parts with contiguous rows through
/// [`super::rowmajor::join_leading`]; `None` for the general copy.
fn copied_join<T: Float>(x: &[&Value<T>], axis: usize, shape: &[usize]) -> Option<ArrayD<T>> {
    if let Some(out) = super::rowmajor::join(x.iter().map(|v| (v.float_slice(), v.shape())), axis, shape) {
        return Some(out);
    }
    if axis != 0 {
        return None;
    }
    let parts: Vec<_> = x.iter().map(|v| v.float()).collect();
    super::rowmajor::join_leading(&parts, shape)
}

/// Inputs joined along `axis` (PyTorch's `cat`). d/dx_k = narrow(g, axis, offset_k, len_k).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Concat {
    /// The axis.
    pub axis: usize,
}

impl<T: Float> Rule<T> for Concat {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        let first = s.first().ok_or_else(|| Fail::Invalid("needs at least one input".into()))?;
        if self.axis >= first.len() {
            return Err(Fail::Invalid(format!("axis {} out of range for rank {}", self.axis, first.len())));
        }
        let mut out = shape_of(first);
        for t in &s[1..] {
            let same = t.len() == first.len()
                && t.iter().zip(first.iter()).enumerate().all(|(i, (a, b))| i == self.axis || a == b);
            if !same {
                return Err(Fail::Mismatch(shape_of(first), shape_of(t)));
            }
            out[self.axis] = out[self.axis]
                .checked_add(t[self.axis])
                .ok_or_else(|| Fail::Invalid("the joined extent overflows".into()))?;
        }
        Ok(out)
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        if let Some(out) = copied_join(x, self.axis, shape) {
            return Ok(out);
        }
        // Written into a row-major result (`ndarray::concatenate` lays the result out
        // along the joined axis, which leaves a concat on a later axis strided).
        // SAFETY: the inputs' extents along the axis sum to the output's (checked by
        // `infer`), so every element is written, and none is read.
        Ok(unsafe {
            filled(shape, |buf| {
                let mut out = ArrayViewMutD::from_shape(IxDyn(shape), buf).expect("a buffer of the shape's size");
                let mut off = 0;
                for v in x {
                    let v = v.float();
                    let len = v.shape()[self.axis];
                    out.slice_axis_mut(Axis(self.axis), Slice::from(off..off + len)).assign(&v);
                    off += len;
                }
            })
        })
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let mut off = 0;
        let mut out = Grads::new();
        for (k, &x) in b.inputs.iter().enumerate() {
            let len = g.shape_of(x)[self.axis];
            out.push(if b.needs[k] { Some(g.narrow(b.grad, self.axis as isize, off, len)?) } else { None });
            off += len;
        }
        Ok(out)
    }
}

/// Elements `start .. start+len` along `axis`. d/dx = pad(g) with zeros around.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Narrow {
    /// The axis.
    pub axis: usize,
    /// The first index kept.
    pub start: usize,
    /// How many are kept.
    pub len: usize,
}

impl<T: Float> Rule<T> for Narrow {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        let x = s[0];
        if self.axis >= x.len() || self.start.checked_add(self.len).is_none_or(|end| end > x[self.axis]) {
            return Err(Fail::Invalid(format!(
                "{} elements from {} on axis {} are outside the input",
                self.len, self.start, self.axis
            )));
        }
        let mut out = shape_of(x);
        out[self.axis] = self.len;
        Ok(out)
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        if let Some(out) = with_float!(x[0], |a| super::rowmajor::narrow(a, self.axis, self.start, self.len, shape)) {
            return Ok(out);
        }
        let sl = Slice::from(self.start..self.start + self.len);
        Ok(fin(x, 0).slice_axis(Axis(self.axis), sl).to_owned())
    }
    fn views(&self, input: &[usize]) -> bool {
        leads(input, self.axis) || long_runs(input, self.axis, self.len)
    }
    fn forward_view(&self, x: &Tensor<T>, _: &[usize]) -> Tensor<T> {
        let mut v = x.clone();
        v.slice_axis_inplace(Axis(self.axis), Slice::from(self.start..self.start + self.len));
        v
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let total = g.shape_of(b.inputs[0])[self.axis];
        grads([Some(g.pad(b.grad, self.axis as isize, self.start, total - self.start - self.len)?)])
    }
}

/// Equally shaped inputs stacked along a new axis `axis`: one copy, where an unsqueeze
/// per input and a concat would make two. d/dx_k = select(g, axis, k).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    /// The new axis.
    pub axis: usize,
}

impl<T: Float> Rule<T> for Stack {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        let first = s.first().ok_or_else(|| Fail::Invalid("needs at least one input".into()))?;
        if self.axis > first.len() {
            return Err(Fail::Invalid(format!("axis {} out of range for rank {}", self.axis, first.len() + 1)));
        }
        if let Some(t) = s[1..].iter().find(|t| t != &first) {
            return Err(Fail::Mismatch(shape_of(first), shape_of(t)));
        }
        let mut out = shape_of(first);
        out.insert(self.axis, s.len());
        Ok(out)
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        if let Some(out) = copied_join(x, self.axis, shape) {
            return Ok(out);
        }
        // Written into a row-major result, as `Concat`.
        // SAFETY: one input per index of the new axis (checked by `infer`), each written
        // whole, so every element is written, and none is read.
        Ok(unsafe {
            filled(shape, |buf| {
                let mut out = ArrayViewMutD::from_shape(IxDyn(shape), buf).expect("a buffer of the shape's size");
                for (k, v) in x.iter().enumerate() {
                    out.index_axis_mut(Axis(self.axis), k).assign(&v.float());
                }
            })
        })
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let mut out = Grads::new();
        for k in 0..b.inputs.len() {
            out.push(if b.needs[k] { Some(g.select(b.grad, self.axis as isize, k)?) } else { None });
        }
        Ok(out)
    }
}

/// Index `index` of `axis`, that axis removed (`x[i]` for axis 0): one copy, where a
/// narrow and a reshape would make two. d/dx = g put back at `index`, zeros elsewhere
/// (the reverse sweep joins the selected slices of one tensor with one concat).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Select {
    /// The axis.
    pub axis: usize,
    /// The index kept.
    pub index: usize,
}

impl<T: Float> Rule<T> for Select {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        let x = s[0];
        if self.axis >= x.len() || self.index >= x[self.axis] {
            return Err(Fail::Invalid(format!("index {} of axis {} is outside the input", self.index, self.axis)));
        }
        let mut out = shape_of(x);
        out.remove(self.axis);
        Ok(out)
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        if let Some(out) = with_float!(x[0], |a| super::rowmajor::select(a, self.axis, self.index, shape)) {
            return Ok(out);
        }
        Ok(fin(x, 0).index_axis(Axis(self.axis), self.index).as_standard_layout().into_owned())
    }
    fn views(&self, input: &[usize]) -> bool {
        leads(input, self.axis) || long_runs(input, self.axis, 1)
    }
    fn forward_view(&self, x: &Tensor<T>, _: &[usize]) -> Tensor<T> {
        x.clone().index_axis_move(Axis(self.axis), self.index)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let total = g.shape_of(b.inputs[0])[self.axis];
        let u = g.unsqueeze(b.grad, self.axis as isize)?;
        grads([Some(g.pad(u, self.axis as isize, self.index, total - self.index - 1)?)])
    }
}

/// Zeros added before and after along `axis`. d/dx = narrow(g, axis, before, len).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pad {
    /// The axis.
    pub axis: usize,
    /// Zeros before.
    pub before: usize,
    /// Zeros after.
    pub after: usize,
}

impl<T: Float> Rule<T> for Pad {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        if self.axis >= s[0].len() {
            return Err(Fail::Invalid(format!("axis {} out of range for rank {}", self.axis, s[0].len())));
        }
        let mut out = shape_of(s[0]);
        out[self.axis] = self
            .before
            .checked_add(self.after)
            .and_then(|p| p.checked_add(out[self.axis]))
            .ok_or_else(|| Fail::Invalid("padded size overflows".into()))?;
        super::numel(&out)?;
        Ok(out)
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let x = fin(x, 0);
        let mut out = ArrayD::zeros(shape);
        let len = x.shape()[self.axis];
        out.slice_axis_mut(Axis(self.axis), Slice::from(self.before..self.before + len)).assign(&x);
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let len = g.shape_of(b.inputs[0])[self.axis];
        grads([Some(g.narrow(b.grad, self.axis as isize, self.before, len)?)])
    }
}

/// `x` broadcast to `shape` (NumPy rules). d/dx = sum_to(g, x.shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BroadcastTo {
    /// The target shape.
    pub shape: Vec<usize>,
}

impl<T: Float> Rule<T> for BroadcastTo {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        super::numel(&self.shape)?;
        match broadcast(s[0], &self.shape) {
            Ok(b) if b[..] == self.shape[..] => Ok(b),
            _ => Err(Fail::Mismatch(shape_of(s[0]), shape_of(&self.shape))),
        }
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        Ok(fin(x, 0).broadcast(IxDyn(shape)).expect("checked").to_owned())
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let s = g.shape_of(b.inputs[0]).to_vec();
        grads([Some(g.sum_to(b.grad, &s)?)])
    }
}

/// Builders: the shape family.
impl<T: Float> Graph<T> {
    /// The same elements (row-major) under `shape`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) if the element counts differ.
    pub fn reshape(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        self.check(x, "reshape")?;
        if self.shape_of(x) == shape {
            return Ok(x);
        }
        self.push(Op::Reshape(Reshape { shape: shape.to_vec() }), &[x])
    }
    /// A new axis of size 1 at `axis` (0..=rank; negative counts from the end).
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an axis out of range.
    pub fn unsqueeze(&mut self, x: NodeId, axis: isize) -> Result<NodeId> {
        self.check(x, "unsqueeze")?;
        let mut s = self.shape_of(x).to_vec();
        let nd = s.len() as isize + 1;
        let a = if axis < 0 { axis + nd } else { axis };
        if !(0..nd).contains(&a) {
            return Err(self.fail(
                "unsqueeze",
                Fail::Invalid(format!("axis {axis} out of range for rank {}", nd - 1)),
                &[x],
            ));
        }
        s.insert(a as usize, 1);
        self.reshape(x, &s)
    }
    /// Removes the axis `axis`, which must have size 1.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) if it is out of range or not of size 1.
    pub fn squeeze(&mut self, x: NodeId, axis: isize) -> Result<NodeId> {
        let a = self.axis("squeeze", x, axis)?;
        let mut s = self.shape_of(x).to_vec();
        if s[a] != 1 {
            return Err(self.fail("squeeze", Fail::Invalid(format!("axis {a} has size {}, not 1", s[a])), &[x]));
        }
        s.remove(a);
        self.reshape(x, &s)
    }
    /// Reorders the axes: output axis `i` is input axis `axes[i]` (PyTorch's `permute`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) if `axes` is not a permutation.
    pub fn permute(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId> {
        self.push(Op::Permute(Permute { axes: axes.to_vec() }), &[x])
    }
    /// Swaps two axes (negative counts from the end).
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an axis out of range.
    pub fn transpose(&mut self, x: NodeId, a: isize, b: isize) -> Result<NodeId> {
        let (a, b) = (self.axis("transpose", x, a)?, self.axis("transpose", x, b)?);
        let mut axes: Vec<usize> = (0..self.shape_of(x).len()).collect();
        axes.swap(a, b);
        self.permute(x, &axes)
    }
    /// Joins `xs` along `axis` (PyTorch's `cat`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if the other axes differ,
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for no inputs or a bad axis.
    pub fn concat(&mut self, xs: &[NodeId], axis: isize) -> Result<NodeId> {
        let first =
            *xs.first().ok_or_else(|| self.fail("concat", Fail::Invalid("needs at least one input".into()), &[]))?;
        let axis = self.axis("concat", first, axis)?;
        if xs.len() == 1 {
            return Ok(first);
        }
        self.push(Op::Concat(Concat { axis }), xs)
    }
    /// Stacks equal-shaped `xs` along a new axis (PyTorch's `stack`).
    ///
    /// # Errors
    /// As [`Graph::concat`].
    pub fn stack(&mut self, xs: &[NodeId], axis: isize) -> Result<NodeId> {
        let first =
            *xs.first().ok_or_else(|| self.fail("stack", Fail::Invalid("needs at least one input".into()), &[]))?;
        self.check(first, "stack")?;
        let nd = self.shape_of(first).len() as isize + 1;
        let a = if axis < 0 { axis + nd } else { axis };
        if a < 0 || a >= nd {
            return Err(self.fail("stack", Fail::Invalid(format!("axis {axis} out of range for rank {nd}")), &[first]));
        }
        self.push(Op::Stack(Stack { axis: a as usize }), xs)
    }
    /// Elements `start .. start+len` along `axis` (PyTorch's `narrow`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) if the range leaves the input.
    pub fn narrow(&mut self, x: NodeId, axis: isize, start: usize, len: usize) -> Result<NodeId> {
        let axis = self.axis("narrow", x, axis)?;
        if start == 0 && len == self.shape_of(x)[axis] {
            return Ok(x);
        }
        self.push(Op::Narrow(Narrow { axis, start, len }), &[x])
    }
    /// Index `i` of `axis`, with that axis removed (`x[i]` for axis 0).
    ///
    /// # Errors
    /// As [`Graph::narrow`].
    pub fn select(&mut self, x: NodeId, axis: isize, i: usize) -> Result<NodeId> {
        let axis = self.axis("select", x, axis)?;
        self.push(Op::Select(Select { axis, index: i }), &[x])
    }
    /// Splits along `axis` into consecutive pieces of the given sizes (PyTorch's `split`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) if the sizes do not add up.
    pub fn split(&mut self, x: NodeId, axis: isize, sizes: &[usize]) -> Result<Vec<NodeId>> {
        let a = self.axis("split", x, axis)?;
        let total = self.shape_of(x)[a];
        if sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s)) != Some(total) {
            return Err(self.fail("split", Fail::Invalid(format!("sizes {sizes:?} do not add up to {total}")), &[x]));
        }
        let mut off = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for &s in sizes {
            out.push(self.narrow(x, a as isize, off, s)?);
            off += s;
        }
        Ok(out)
    }
    /// Splits along `axis` into `n` equal pieces (PyTorch's `chunk` when it divides evenly).
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) if `n` does not divide the axis.
    pub fn chunk(&mut self, x: NodeId, n: usize, axis: isize) -> Result<Vec<NodeId>> {
        let a = self.axis("chunk", x, axis)?;
        let total = self.shape_of(x)[a];
        if n == 0 || !total.is_multiple_of(n) {
            return Err(self.fail("chunk", Fail::Invalid(format!("{n} does not divide size {total}")), &[x]));
        }
        self.split(x, a as isize, &vec![total / n; n])
    }
    /// Zeros added along `axis`: `before` in front, `after` behind.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an axis out of range.
    pub fn pad(&mut self, x: NodeId, axis: isize, before: usize, after: usize) -> Result<NodeId> {
        let axis = self.axis("pad", x, axis)?;
        self.push(Op::Pad(Pad { axis, before, after }), &[x])
    }
    /// `x` broadcast to `shape`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if it does not broadcast.
    pub fn broadcast_to(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        self.check(x, "broadcast_to")?;
        if self.shape_of(x) == shape {
            return Ok(x);
        }
        self.push(Op::BroadcastTo(BroadcastTo { shape: shape.to_vec() }), &[x])
    }
}

/// Whether a slice along `axis` of a row-major array of shape `s` is row-major: the
/// axes before it have length 1 (a slice along the first axis, for one).
fn leads(s: &[usize], axis: usize) -> bool {
    s[..axis].iter().all(|&d| d == 1)
}

/// The shortest contiguous run a strided view's rows may have: a slice of shorter
/// runs is copied, so that the ops reading it take their row-major paths.
const MIN_RUN: usize = 64;

/// Whether `len` indices of `axis` of a row-major array of shape `s` are runs of at
/// least [`MIN_RUN`] contiguous elements (the state blocks of a fused step's
/// `[B, 6H]` output, for one): such a slice is viewed with a row stride.
fn long_runs(s: &[usize], axis: usize, len: usize) -> bool {
    len * s[axis + 1..].iter().product::<usize>() >= MIN_RUN
}
