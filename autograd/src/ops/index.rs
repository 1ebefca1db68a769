//! Integer indexing: `index_select` (embedding lookup), `gather`, and their
//! adjoints `index_add` and `scatter_add`, which accumulate repeated indices.

use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use super::{arity, fin, grads, shape_of, Back, FResult, Fail, Grads, Op, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Value};

/// Rows of `x` along `axis` picked by an int64 index tensor of any rank: the output
/// shape is `x.shape[..axis] ++ idx.shape ++ x.shape[axis+1..]` (NumPy's `take`;
/// with a 1-D index this is PyTorch's `index_select`, and on axis 0 of a `[V, E]`
/// weight it is `nn.Embedding`). d/dx = index_add(g), accumulating repeated indices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexSelect {
    /// The axis.
    pub axis: usize,
}

/// The adjoint of [`IndexSelect`]: zeros of size `size` along `axis`, with every
/// slice of `src` added at its index. d/dsrc = index_select(g).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexAdd {
    /// The axis.
    pub axis: usize,
    /// The size of the output along `axis`.
    pub size: usize,
}

/// PyTorch's `gather`: `out[p] = x[p with p[axis] = idx[p]]`; `idx` has the rank
/// of `x` and the output has `idx`'s shape. d/dx = scatter_add(g).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gather {
    /// The axis.
    pub axis: usize,
}

/// The adjoint of [`Gather`]: zeros of `shape` with `out[p with p[axis] = idx[p]] += src[p]`.
/// d/dsrc = gather(g).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScatterAdd {
    /// The axis.
    pub axis: usize,
    /// The output shape.
    pub shape: Vec<usize>,
}

fn check_index(idx: &ArrayD<i64>, bound: usize) -> FResult<()> {
    match idx.iter().find(|&&i| i < 0 || i as usize >= bound) {
        Some(&index) => Err(Fail::IndexRange { index, bound }),
        None => Ok(()),
    }
}

fn take_shape(x: &[usize], axis: usize, idx: &[usize]) -> Shape {
    x[..axis].iter().chain(idx).chain(&x[axis + 1..]).copied().collect()
}

/// The element counts before `axis`, along it, and after it.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

fn axis_ok(rank: usize, axis: usize) -> FResult<()> {
    if axis >= rank {
        return Err(Fail::Invalid(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(())
}

impl<T: Float> Rule<T> for IndexSelect {
    fn index_inputs(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        axis_ok(s[0].len(), self.axis)?;
        Ok(take_shape(s[0], self.axis, s[1]))
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (src, idx) = (fin(x, 0), x[1].index());
        check_index(idx, src.shape()[self.axis])?;
        if let Some(s) = src.as_slice() {
            // Row-major: one slice copy per picked row (an embedding lookup).
            let (outer, n, inner) = split_at_axis(src.shape(), self.axis);
            let mut out = Vec::with_capacity(outer * idx.len() * inner);
            for o in 0..outer {
                for &i in idx {
                    let at = (o * n + i as usize) * inner;
                    out.extend_from_slice(&s[at..at + inner]);
                }
            }
            return Ok(ArrayD::from_shape_vec(IxDyn(shape), out).expect("sized"));
        }
        let picks: Vec<usize> = idx.iter().map(|&i| i as usize).collect();
        let out = src.select(Axis(self.axis), &picks);
        Ok(out.to_shape(IxDyn(shape)).expect("sized").into_owned())
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let size = g.shape_of(b.inputs[0])[self.axis];
        let gx = g.push(Op::IndexAdd(IndexAdd { axis: self.axis, size }), &[b.grad, b.inputs[1]])?;
        grads([Some(gx), None])
    }
}

impl<T: Float> Rule<T> for IndexAdd {
    fn index_inputs(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        let (src, idx) = (s[0], s[1]);
        let lead = self.axis.saturating_add(idx.len());
        if src.len() < lead || src[self.axis..lead] != *idx {
            return Err(Fail::Mismatch(shape_of(src), shape_of(idx)));
        }
        Ok(src[..self.axis].iter().chain(std::iter::once(&self.size)).chain(&src[lead..]).copied().collect())
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (src, idx) = (fin(x, 0), x[1].index());
        check_index(idx, self.size)?;
        if let Some(s) = src.as_slice() {
            // Row-major: each slice added at its row, in the order of the index (the
            // same sums, in the same order, as the general path below).
            let (outer, _, inner) = split_at_axis(shape, self.axis);
            let mut out = vec![T::zero(); outer * self.size * inner];
            for o in 0..outer {
                for (k, &i) in idx.iter().enumerate() {
                    let from = &s[(o * idx.len() + k) * inner..][..inner];
                    let to = &mut out[(o * self.size + i as usize) * inner..][..inner];
                    for (t, &f) in to.iter_mut().zip(from) {
                        *t += f;
                    }
                }
            }
            return Ok(ArrayD::from_shape_vec(IxDyn(shape), out).expect("sized"));
        }
        let mut flat_shape: Vec<usize> = shape.to_vec();
        flat_shape[self.axis] = idx.len();
        let src = src.to_shape(IxDyn(&flat_shape)).expect("sized");
        let mut out = ArrayD::zeros(shape);
        for (k, &i) in idx.iter().enumerate() {
            let mut row = out.index_axis_mut(Axis(self.axis), i as usize);
            row += &src.index_axis(Axis(self.axis), k);
        }
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let gx = g.index_select(b.grad, self.axis as isize, b.inputs[1])?;
        grads([Some(gx), None])
    }
}

fn gather_infer(x: &[usize], idx: &[usize], axis: usize) -> FResult<()> {
    axis_ok(x.len(), axis)?;
    let fits = idx.len() == x.len() && idx.iter().zip(x).enumerate().all(|(d, (i, n))| d == axis || i <= n);
    if !fits {
        return Err(Fail::Mismatch(shape_of(x), shape_of(idx)));
    }
    Ok(())
}

impl<T: Float> Rule<T> for Gather {
    fn index_inputs(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        gather_infer(s[0], s[1], self.axis)?;
        Ok(shape_of(s[1]))
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (src, idx) = (fin(x, 0), x[1].index());
        check_index(idx, src.shape()[self.axis])?;
        let mut out = ArrayD::zeros(shape);
        let mut q = vec![0usize; shape.len()];
        for ((p, &i), o) in idx.indexed_iter().zip(out.iter_mut()) {
            q.copy_from_slice(ndarray::Dimension::slice(&p));
            q[self.axis] = i as usize;
            *o = src[&q[..]];
        }
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let shape = g.shape_of(b.inputs[0]).to_vec();
        let gx = g.push(Op::ScatterAdd(ScatterAdd { axis: self.axis, shape }), &[b.grad, b.inputs[1]])?;
        grads([Some(gx), None])
    }
}

impl<T: Float> Rule<T> for ScatterAdd {
    fn index_inputs(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        if s[0] != s[1] {
            return Err(Fail::Mismatch(shape_of(s[0]), shape_of(s[1])));
        }
        gather_infer(&self.shape, s[1], self.axis)?;
        Ok(shape_of(&self.shape))
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (src, idx) = (fin(x, 0), x[1].index());
        check_index(idx, shape[self.axis])?;
        let mut out = ArrayD::zeros(shape);
        let mut q = vec![0usize; shape.len()];
        for ((p, &i), &v) in idx.indexed_iter().zip(src.iter()) {
            q.copy_from_slice(ndarray::Dimension::slice(&p));
            q[self.axis] = i as usize;
            out[&q[..]] += v;
        }
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let gx = g.gather(b.grad, self.axis as isize, b.inputs[1])?;
        grads([Some(gx), None])
    }
}

/// Builders: the indexing family.
impl<T: Float> Graph<T> {
    /// Slices of `x` along `axis` picked by the int64 node `idx` (any rank; see [`IndexSelect`]).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) for an index outside the axis,
    /// [`Error::DTypeMismatch`](crate::Error::DTypeMismatch) if `idx` is not int64.
    pub fn index_select(&mut self, x: NodeId, axis: isize, idx: NodeId) -> Result<NodeId> {
        let axis = self.axis("index_select", x, axis)?;
        self.push(Op::IndexSelect(IndexSelect { axis }), &[x, idx])
    }
    /// An embedding lookup as `nn.Embedding`: rows of `weight` `[V, E]` for the token
    /// ids `idx` of any shape `S`, giving `S ++ [E]`.
    ///
    /// # Errors
    /// As [`Graph::index_select`].
    pub fn embedding(&mut self, weight: NodeId, idx: NodeId) -> Result<NodeId> {
        self.index_select(weight, 0, idx)
    }
    /// PyTorch's `gather` along `axis`.
    ///
    /// # Errors
    /// As [`Graph::index_select`]; [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if
    /// `idx` does not fit `x`.
    pub fn gather(&mut self, x: NodeId, axis: isize, idx: NodeId) -> Result<NodeId> {
        let axis = self.axis("gather", x, axis)?;
        self.push(Op::Gather(Gather { axis }), &[x, idx])
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::ops::column_major;

    /// The row-major paths of `index_select` and `index_add` against the general ones,
    /// on every axis, with repeated indices and a 2-D index.
    #[test]
    fn row_major_index_paths_match_the_general_ones() {
        let x = ArrayD::from_shape_fn(IxDyn(&[3, 4, 5]), |i| (i[0] * 20 + i[1] * 5 + i[2]) as f64 * 0.37);
        let idx = Value::Index(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1, 0, 1, 2, 2, 0]).expect("sized"));
        for axis in 0..3 {
            let sel = IndexSelect { axis };
            let shape = take_shape(x.shape(), axis, &[2, 3]);
            let (xr, xc) = (Value::Float(x.clone()), Value::Float(column_major(&x)));
            let fast = Rule::<f64>::forward(&sel, &[&xr, &idx], &shape).expect("valid");
            let general = Rule::<f64>::forward(&sel, &[&xc, &idx], &shape).expect("valid");
            assert!(xc.float().as_slice().is_none(), "the general path is taken");
            assert_eq!(fast, general, "index_select on axis {axis}");

            let add = IndexAdd { axis, size: x.shape()[axis] };
            let g = fast.mapv(|v| v.sin());
            let (gr, gc) = (Value::Float(g.clone()), Value::Float(column_major(&g)));
            let fast = Rule::<f64>::forward(&add, &[&gr, &idx], x.shape()).expect("valid");
            let general = Rule::<f64>::forward(&add, &[&gc, &idx], x.shape()).expect("valid");
            assert_eq!(fast, general, "index_add on axis {axis}");
        }
    }
}
