//! Matrix products: 2-D, batched 3-D, and 3-D by a shared 2-D matrix.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayD, ArrayView2, Axis, Ix2, Ix3};
use serde::{Deserialize, Serialize};

use super::{arity, fin, grads, Back, FResult, Fail, Grads, Op, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Value};

/// Matrix product `a @ b` as `torch.matmul` for these ranks:
/// `[m, k] @ [k, n] -> [m, n]`; `[B, m, k] @ [B, k, n] -> [B, m, n]`;
/// `[B, m, k] @ [k, n] -> [B, m, n]` (the matrix shared by every batch entry).
/// d/da = g @ bᵀ, d/db = aᵀ @ g (summed over the batch when `b` is shared).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatMul;

fn view2<T>(a: &ArrayD<T>) -> ArrayView2<'_, T> {
    a.view()
        .into_dimensionality::<Ix2>()
        .expect("rank checked by infer")
}

impl<T: Float> Rule<T> for MatMul {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        let (a, b) = (s[0], s[1]);
        let bad = || Fail::Mismatch(a.iter().copied().collect(), b.iter().copied().collect());
        match (a.len(), b.len()) {
            (2, 2) if a[1] == b[0] => Ok(Shape::from_slice(&[a[0], b[1]])),
            (3, 3) if a[0] == b[0] && a[2] == b[1] => Ok(Shape::from_slice(&[a[0], a[1], b[2]])),
            (3, 2) if a[2] == b[0] => Ok(Shape::from_slice(&[a[0], a[1], b[1]])),
            (2, 2) | (3, 3) | (3, 2) => Err(bad()),
            _ => Err(Fail::Invalid(format!(
                "ranks {} and {} are not supported (2-D @ 2-D, 3-D @ 3-D, 3-D @ 2-D)",
                a.len(),
                b.len()
            ))),
        }
    }

    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (a, b) = (fin(x, 0), fin(x, 1));
        let mut out = ArrayD::zeros(shape);
        match (a.ndim(), b.ndim()) {
            (2, 2) => {
                let mut o = out.view_mut().into_dimensionality::<Ix2>().expect("rank 2");
                general_mat_mul(T::one(), &view2(a), &view2(b), T::zero(), &mut o);
            }
            (3, 2) => {
                let (bs, m, k) = (a.shape()[0], a.shape()[1], a.shape()[2]);
                let a2 = a.to_shape((bs * m, k)).expect("sized");
                let mut o = out
                    .view_mut()
                    .into_shape_with_order((bs * m, shape[2]))
                    .expect("contiguous");
                general_mat_mul(T::one(), &a2, &view2(b), T::zero(), &mut o);
            }
            _ => {
                let a3 = a.view().into_dimensionality::<Ix3>().expect("rank 3");
                let b3 = b.view().into_dimensionality::<Ix3>().expect("rank 3");
                let mut o3 = out.view_mut().into_dimensionality::<Ix3>().expect("rank 3");
                for i in 0..shape[0] {
                    let mut oi = o3.index_axis_mut(Axis(0), i);
                    general_mat_mul(
                        T::one(),
                        &a3.index_axis(Axis(0), i),
                        &b3.index_axis(Axis(0), i),
                        T::zero(),
                        &mut oi,
                    );
                }
            }
        }
        Ok(out)
    }

    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let (a, m) = (b.inputs[0], b.inputs[1]);
        let (ra, rb) = (g.shape_of(a).len(), g.shape_of(m).len());
        let ga = if b.needs[0] {
            let mt = g.transpose(m, -2, -1)?;
            Some(g.matmul(b.grad, mt)?)
        } else {
            None
        };
        let gb = if !b.needs[1] {
            None
        } else if ra == 3 && rb == 2 {
            let sa = g.shape_of(a).to_vec();
            let n = g.shape_of(m)[1];
            let a2 = g.reshape(a, &[sa[0] * sa[1], sa[2]])?;
            let g2 = g.reshape(b.grad, &[sa[0] * sa[1], n])?;
            let a2t = g.transpose(a2, 0, 1)?;
            Some(g.matmul(a2t, g2)?)
        } else {
            let at = g.transpose(a, -2, -1)?;
            Some(g.matmul(at, b.grad)?)
        };
        grads([ga, gb])
    }
}

/// Builders: the linear-algebra family.
impl<T: Float> Graph<T> {
    /// `a @ b` (see [`MatMul`] for the ranks). d/da = g bᵀ, d/db = aᵀ g.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) when the inner sizes differ,
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for other ranks.
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(Op::MatMul(MatMul), &[a, b])
    }

    /// A linear map as `torch.nn.functional.linear`: `x @ weightᵀ + bias`, with
    /// `weight` of shape `[out, in]` and `x` of shape `[N, in]` or `[B, N, in]`.
    ///
    /// # Errors
    /// As [`Graph::matmul`] and [`Graph::add`].
    pub fn linear(&mut self, x: NodeId, weight: NodeId, bias: Option<NodeId>) -> Result<NodeId> {
        let wt = self.transpose(weight, 0, 1)?;
        let y = self.matmul(x, wt)?;
        match bias {
            Some(b) => self.add(y, b),
            None => Ok(y),
        }
    }
}
