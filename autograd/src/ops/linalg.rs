//! Matrix products with transposition flags (as BLAS `gemm`): `op(a) @ op(b)`, where
//! `op` transposes the last two axes when its flag is set. A transposed operand is
//! read through its strides, never copied, and every backward rule is another
//! product with flags, so no transpose node is ever recorded.

use ndarray::{ArrayBase, ArrayD, ArrayView2, ArrayViewMut2, ArrayViewMutD, Axis, Data, Ix2, Ix3, IxDyn};
use serde::{Deserialize, Serialize};

use super::fresh::filled;
use super::{arity, fin, grads, Back, FResult, Fail, Grads, Op, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::gemm::{gemm, gemm_packed, gemm_pair, wants_packed, Packed, Product};
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Value};

/// Outputs of at most this many elements are accumulated into zeros (see
/// [`MatMul`]'s forward).
pub(crate) const SMALL_OUTPUT: usize = 1 << 14;

fn is_false(b: &bool) -> bool {
    !*b
}

/// `op(a) @ op(b)` as `torch.matmul` for these ranks: `[m, k] @ [k, n] -> [m, n]`;
/// `[B, m, k] @ [B, k, n] -> [B, m, n]`; `[B, m, k] @ [k, n] -> [B, m, n]` (one matrix
/// for every batch entry; `trans_a` must then be off). `op(x)` is `xᵀ` (last two
/// axes swapped) when the flag is set.
/// For `c = a @ b`: d/da = g bᵀ, d/db = aᵀ g (summed over the batch when `b` is shared).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MatMul {
    /// Transpose `a`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub trans_a: bool,
    /// Transpose `b`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub trans_b: bool,
}

fn view2<T, S: Data<Elem = T>>(a: &ArrayBase<S, IxDyn>, t: bool) -> ArrayView2<'_, T> {
    let v = a.view().into_dimensionality::<Ix2>().expect("rank checked by infer");
    if t {
        v.reversed_axes()
    } else {
        v
    }
}

/// The (rows, cols) of the last two axes of `s` after the optional transpose.
fn mat(s: &[usize], t: bool) -> (usize, usize) {
    let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
    if t {
        (c, r)
    } else {
        (r, c)
    }
}

impl MatMul {
    /// The inner dimension of `op(a) @ op(b)`.
    fn inner(&self, a: &[usize]) -> usize {
        mat(a, self.trans_a).1
    }

    /// `out = op(a) @ op(b) + beta * out` for shapes `infer` accepted.
    fn product_into<T: Float, S: Data<Elem = T>, S2: Data<Elem = T>>(
        &self,
        a: &ArrayBase<S, IxDyn>,
        b: &ArrayBase<S2, IxDyn>,
        shape: &[usize],
        beta: T,
        out: &mut ArrayViewMutD<'_, T>,
    ) {
        match (a.ndim(), b.ndim()) {
            (2, 2) => {
                let mut o = out.view_mut().into_dimensionality::<Ix2>().expect("rank 2");
                gemm(T::one(), &view2(a, self.trans_a), &view2(b, self.trans_b), beta, &mut o);
            }
            (3, 2) => {
                let (bs, m, k) = (a.shape()[0], a.shape()[1], a.shape()[2]);
                let a2 = a.to_shape((bs * m, k)).expect("sized");
                let mut o = out.view_mut().into_shape_with_order((bs * m, shape[2])).expect("contiguous");
                gemm(T::one(), &a2.view(), &view2(b, self.trans_b), beta, &mut o);
            }
            _ => {
                let a3 = a.view().into_dimensionality::<Ix3>().expect("rank 3");
                let b3 = b.view().into_dimensionality::<Ix3>().expect("rank 3");
                let mut o3 = out.view_mut().into_dimensionality::<Ix3>().expect("rank 3");
                for i in 0..shape[0] {
                    let (ai, bi) = (a3.index_axis(Axis(0), i), b3.index_axis(Axis(0), i));
                    let ai = if self.trans_a { ai.reversed_axes() } else { ai };
                    let bi = if self.trans_b { bi.reversed_axes() } else { bi };
                    let mut oi = o3.index_axis_mut(Axis(0), i);
                    gemm(T::one(), &ai, &bi, beta, &mut oi);
                }
            }
        }
    }

    /// The forward product of two matrices reading `b` through a packed copy that
    /// `packed` supplies (made once, kept while `b` does not change): the same
    /// product as [`Rule::forward`], for an `f32` product with few rows (a step's, or
    /// a short sequence's input projection, `[T, B, I]` row-major read as `T·B` rows)
    /// and a transposed `b`. `None` when that does not apply.
    pub(crate) fn forward_packed<'p, T: Float, S: Data<Elem = T>, S2: Data<Elem = T>>(
        &self,
        a: &ArrayBase<S, IxDyn>,
        b: &ArrayBase<S2, IxDyn>,
        shape: &[usize],
        packed: impl FnOnce(&ArrayView2<'_, T>) -> Option<&'p Packed>,
    ) -> Option<ArrayD<T>> {
        if b.ndim() != 2 {
            return None;
        }
        let av = match a.ndim() {
            2 => view2(a, self.trans_a),
            // A sequence's input projection, `[T, B, I]` read as `[T·B, I]` rows.
            3 if !self.trans_a => {
                let rows = a.shape()[0] * a.shape()[1];
                ArrayView2::from_shape((rows, a.shape()[2]), a.as_slice()?).ok()?
            }
            _ => return None,
        };
        let bv = view2(b, self.trans_b);
        if !wants_packed(av.nrows(), &bv) {
            return None;
        }
        let pk = packed(&bv)?;
        let mut done = false;
        // SAFETY: with beta = 0 the product writes every element of `o` without
        // reading it; when it does not apply it has written nothing, and the buffer is
        // cleared before it is dropped.
        let out = unsafe {
            filled(shape, |s| {
                let mut o = ArrayViewMut2::from_shape((av.nrows(), bv.ncols()), &mut *s).expect("sized");
                done = gemm_packed(T::one(), &av, pk, T::zero(), &mut o);
                if !done {
                    s.fill(T::zero());
                }
            })
        };
        done.then_some(out)
    }
}

/// Two products of matrices with the same shapes, computed together ([`gemm_pair`]):
/// the values [`Rule::forward`] gives each. `None` when they are not both products of
/// two matrices with a large output (those are computed one at a time).
pub(crate) fn forward_pair<T: Float>(
    (first, x1): (&MatMul, &[&Value<T>]),
    (second, x2): (&MatMul, &[&Value<T>]),
    shape: &[usize],
) -> Option<(ArrayD<T>, ArrayD<T>)> {
    let (a1, b1, a2, b2) = (fin(x1, 0), fin(x1, 1), fin(x2, 0), fin(x2, 1));
    let ranks = [&a1, &b1, &a2, &b2].iter().all(|v| v.ndim() == 2) && shape.len() == 2;
    if !ranks || shape.iter().product::<usize>() <= SMALL_OUTPUT {
        return None;
    }
    let (a1, b1) = (view2(&a1, first.trans_a), view2(&b1, first.trans_b));
    let (a2, b2) = (view2(&a2, second.trans_a), view2(&b2, second.trans_b));
    let fits = |a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>| a.ncols() == b.nrows() && [a.nrows(), b.ncols()] == shape;
    if !fits(&a1, &b1) || !fits(&a2, &b2) || a1.ncols() != a2.ncols() || a1.ncols() == 0 {
        return None;
    }
    let mut second_out = None;
    // SAFETY: with beta = 0 and a nonempty inner dimension, every backend writes each
    // element of both outputs without reading them (BLAS semantics).
    let first_out = unsafe {
        filled(shape, |s1| {
            second_out = Some(filled(shape, |s2| {
                let c1 = ArrayViewMut2::from_shape((shape[0], shape[1]), s1).expect("sized");
                let c2 = ArrayViewMut2::from_shape((shape[0], shape[1]), s2).expect("sized");
                let first = Product { a: a1, b: b1, c: c1 };
                gemm_pair(T::one(), T::zero(), first, Product { a: a2, b: b2, c: c2 });
            }));
        })
    };
    Some((first_out, second_out.expect("made with the first")))
}

impl<T: Float> Rule<T> for MatMul {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        let (a, b) = (s[0], s[1]);
        let bad = || Fail::Mismatch(a.iter().copied().collect(), b.iter().copied().collect());
        match (a.len(), b.len()) {
            (2, 2) | (3, 3) | (3, 2) => {}
            _ => {
                return Err(Fail::Invalid(format!(
                    "ranks {} and {} are not supported (2-D @ 2-D, 3-D @ 3-D, 3-D @ 2-D)",
                    a.len(),
                    b.len()
                )))
            }
        }
        if a.len() == 3 && b.len() == 2 && self.trans_a {
            return Err(Fail::Invalid("a 3-D @ 2-D product cannot transpose the 3-D operand".into()));
        }
        let ((m, k), (k2, n)) = (mat(a, self.trans_a), mat(b, self.trans_b));
        if k != k2 || (a.len() == 3 && b.len() == 3 && a[0] != b[0]) {
            return Err(bad());
        }
        Ok(if a.len() == 3 { Shape::from_slice(&[a[0], m, n]) } else { Shape::from_slice(&[m, n]) })
    }

    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (a, b) = (fin(x, 0), fin(x, 1));
        // A small product is accumulated into zeros (beta = 1): the same values as
        // beta = 0, without a BLAS's separate pass that clears the output first. A
        // large output is written without being read first (beta = 0) into a buffer
        // that was never cleared, so it is written once.
        let len = shape.iter().product::<usize>();
        if len <= SMALL_OUTPUT || self.inner(a.shape()) == 0 {
            let mut out = ArrayD::zeros(shape);
            self.product_into(&a, &b, shape, T::one(), &mut out.view_mut());
            return Ok(out);
        }
        // SAFETY: with beta = 0 and a nonempty inner dimension, every backend writes
        // each element of the output without reading it (BLAS semantics).
        Ok(unsafe {
            filled(shape, |s| {
                let mut o = ArrayViewMutD::from_shape(shape, s).expect("sized");
                self.product_into(&a, &b, shape, T::zero(), &mut o);
            })
        })
    }

    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let (a, m, gr) = (b.inputs[0], b.inputs[1], b.grad);
        let (ta, tb) = (self.trans_a, self.trans_b);
        let shared = g.shape_of(a).len() == 3 && g.shape_of(m).len() == 2;
        // c = op(a) op(b): the four flag cases of d/da and d/db, each one product.
        let ga = if !b.needs[0] {
            None
        } else {
            Some(match (ta, tb) {
                (false, false) => g.matmul_t(gr, m, false, true)?,
                (false, true) => g.matmul_t(gr, m, false, false)?,
                (true, false) => g.matmul_t(m, gr, false, true)?,
                (true, true) => g.matmul_t(m, gr, true, true)?,
            })
        };
        let gb = if !b.needs[1] {
            None
        } else if shared {
            // Sum over the batch: flatten [B, m, k] and [B, m, n] to 2-D first.
            let (sa, n) = (g.shape_of(a).to_vec(), g.shape_of(gr)[2]);
            let a2 = g.reshape(a, &[sa[0] * sa[1], sa[2]])?;
            let g2 = g.reshape(gr, &[sa[0] * sa[1], n])?;
            Some(if tb { g.matmul_t(g2, a2, true, false)? } else { g.matmul_t(a2, g2, true, false)? })
        } else {
            Some(match (ta, tb) {
                (false, false) => g.matmul_t(a, gr, true, false)?,
                (false, true) => g.matmul_t(gr, a, true, false)?,
                (true, false) => g.matmul_t(a, gr, false, false)?,
                (true, true) => g.matmul_t(gr, a, true, true)?,
            })
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
        self.matmul_t(a, b, false, false)
    }

    /// `op(a) @ op(b)`, `op` transposing the last two axes when its flag is set;
    /// the transposed operand is read in place, not copied.
    ///
    /// # Errors
    /// As [`Graph::matmul`].
    pub fn matmul_t(&mut self, a: NodeId, b: NodeId, trans_a: bool, trans_b: bool) -> Result<NodeId> {
        self.push(Op::MatMul(MatMul { trans_a, trans_b }), &[a, b])
    }

    /// A linear map as `torch.nn.functional.linear`: `x @ weightᵀ + bias`, with
    /// `weight` of shape `[out, in]` and `x` of shape `[N, in]` or `[B, N, in]`.
    ///
    /// # Errors
    /// As [`Graph::matmul`] and [`Graph::add`].
    pub fn linear(&mut self, x: NodeId, weight: NodeId, bias: Option<NodeId>) -> Result<NodeId> {
        let y = self.matmul_t(x, weight, false, true)?;
        match bias {
            Some(b) => self.add(y, b),
            None => Ok(y),
        }
    }
}
