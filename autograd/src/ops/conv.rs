//! Convolution (NCHW cross-correlation as PyTorch's `conv2d`), its two adjoints,
//! and the channel-window sum behind local response normalization.

use ndarray::{Array2, ArrayD, ArrayView3, ArrayViewD, ArrayViewMut3, Axis, Ix4, IxDyn};
use serde::{Deserialize, Serialize};

use super::{arity, fin, grads, shape_of, Back, FResult, Fail, Grads, Op, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Value};

/// Stride and zero padding of a 2-D convolution, per spatial axis (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dGeometry {
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Zero padding on both sides (height, width).
    pub padding: [usize; 2],
}

impl Conv2dGeometry {
    fn out_len(&self, axis: usize, n: usize, k: usize) -> FResult<usize> {
        let padded = self.padding[axis].checked_mul(2).and_then(|p| p.checked_add(n)).unwrap_or(usize::MAX);
        if self.stride[axis] == 0 || padded < k || padded == usize::MAX {
            return Err(Fail::Invalid(format!(
                "kernel {k} does not fit input {n} with padding {} and stride {}",
                self.padding[axis], self.stride[axis]
            )));
        }
        Ok((padded - k) / self.stride[axis] + 1)
    }
}

/// `conv2d(x, w)`: `x [N, C, H, W]`, `w [O, C, kh, kw]` -> `[N, O, Ho, Wo]`,
/// `out[n,o,y,x] = Σ_{c,i,j} w[o,c,i,j] · x_pad[n,c,y·s+i,x·s+j]` (cross-correlation,
/// zero padding), with `Ho = (H + 2p - kh)/s + 1`. d/dx = [`Conv2dInputGrad`],
/// d/dw = [`Conv2dWeightGrad`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2d {
    /// Stride and padding.
    pub geometry: Conv2dGeometry,
}

/// The adjoint of [`Conv2d`] in its input (a transposed convolution):
/// inputs `(g [N, O, Ho, Wo], w [O, C, kh, kw])` -> `[N, C, H, W]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2dInputGrad {
    /// Stride and padding of the forward convolution.
    pub geometry: Conv2dGeometry,
    /// The forward input's height and width.
    pub input_hw: [usize; 2],
}

/// The adjoint of [`Conv2d`] in its weight: inputs `(x [N, C, H, W], g [N, O, Ho, Wo])`
/// -> `[O, C, kh, kw]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2dWeightGrad {
    /// Stride and padding of the forward convolution.
    pub geometry: Conv2dGeometry,
    /// The kernel's height and width.
    pub kernel_hw: [usize; 2],
}

struct Dims {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    geo: Conv2dGeometry,
}

fn im2col<T: Float>(x: ArrayView3<T>, d: &Dims) -> Array2<T> {
    let mut cols = Array2::zeros((d.c * d.kh * d.kw, d.ho * d.wo));
    let (s, p) = (d.geo.stride, d.geo.padding);
    for c in 0..d.c {
        for i in 0..d.kh {
            for j in 0..d.kw {
                let mut row = cols.row_mut((c * d.kh + i) * d.kw + j);
                for oy in 0..d.ho {
                    let y = (oy * s[0] + i) as isize - p[0] as isize;
                    if y < 0 || y >= d.h as isize {
                        continue;
                    }
                    for ox in 0..d.wo {
                        let xx = (ox * s[1] + j) as isize - p[1] as isize;
                        if xx >= 0 && xx < d.w as isize {
                            row[oy * d.wo + ox] = x[[c, y as usize, xx as usize]];
                        }
                    }
                }
            }
        }
    }
    cols
}

fn col2im<T: Float>(cols: &Array2<T>, d: &Dims, mut out: ArrayViewMut3<T>) {
    let (s, p) = (d.geo.stride, d.geo.padding);
    for c in 0..d.c {
        for i in 0..d.kh {
            for j in 0..d.kw {
                let row = cols.row((c * d.kh + i) * d.kw + j);
                for oy in 0..d.ho {
                    let y = (oy * s[0] + i) as isize - p[0] as isize;
                    if y < 0 || y >= d.h as isize {
                        continue;
                    }
                    for ox in 0..d.wo {
                        let xx = (ox * s[1] + j) as isize - p[1] as isize;
                        if xx >= 0 && xx < d.w as isize {
                            out[[c, y as usize, xx as usize]] += row[oy * d.wo + ox];
                        }
                    }
                }
            }
        }
    }
}

fn rank4(s: &[usize], what: &str) -> FResult<()> {
    if s.len() != 4 {
        return Err(Fail::Invalid(format!("{what} must be 4-D (NCHW), got rank {}", s.len())));
    }
    Ok(())
}

/// Checks x `[N, C, H, W]` against w `[O, C, kh, kw]` and returns the dims and `[N, O, Ho, Wo]`.
fn conv_dims(geo: Conv2dGeometry, x: &[usize], w: &[usize]) -> FResult<(Dims, Shape)> {
    rank4(x, "input")?;
    rank4(w, "weight")?;
    if x[1] != w[1] {
        return Err(Fail::Mismatch(shape_of(x), shape_of(w)));
    }
    let ho = geo.out_len(0, x[2], w[2])?;
    let wo = geo.out_len(1, x[3], w[3])?;
    let d = Dims { c: x[1], h: x[2], w: x[3], kh: w[2], kw: w[3], ho, wo, geo };
    Ok((d, Shape::from_slice(&[x[0], w[0], ho, wo])))
}

fn weight2<T: Float>(w: &ArrayViewD<'_, T>, d: &Dims) -> Array2<T> {
    let o = w.shape()[0];
    w.to_shape((o, d.c * d.kh * d.kw)).expect("sized").into_owned()
}

impl<T: Float> Rule<T> for Conv2d {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        Ok(conv_dims(self.geometry, s[0], s[1])?.1)
    }
    fn forward(&self, v: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (x, w) = (fin(v, 0), fin(v, 1));
        let (d, _) = conv_dims(self.geometry, x.shape(), w.shape())?;
        let w2 = weight2(&w, &d);
        let x4 = x.view().into_dimensionality::<Ix4>().expect("rank 4");
        let mut out = ArrayD::zeros(shape);
        for n in 0..shape[0] {
            let cols = im2col(x4.index_axis(Axis(0), n), &d);
            let mut y =
                out.index_axis_mut(Axis(0), n).into_shape_with_order((w2.nrows(), cols.ncols())).expect("contiguous");
            crate::gemm::gemm(T::one(), &w2.view(), &cols.view(), T::zero(), &mut y);
        }
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let (x, w) = (b.inputs[0], b.inputs[1]);
        let geometry = self.geometry;
        let gx = if b.needs[0] {
            let xs = g.shape_of(x);
            let input_hw = [xs[2], xs[3]];
            Some(g.push(Op::Conv2dInputGrad(Conv2dInputGrad { geometry, input_hw }), &[b.grad, w])?)
        } else {
            None
        };
        let gw = if b.needs[1] {
            let ws = g.shape_of(w);
            let kernel_hw = [ws[2], ws[3]];
            Some(g.push(Op::Conv2dWeightGrad(Conv2dWeightGrad { geometry, kernel_hw }), &[x, b.grad])?)
        } else {
            None
        };
        grads([gx, gw])
    }
}

impl<T: Float> Rule<T> for Conv2dInputGrad {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        let (gs, ws) = (s[0], s[1]);
        rank4(gs, "gradient")?;
        rank4(ws, "weight")?;
        let x = [gs[0], ws[1], self.input_hw[0], self.input_hw[1]];
        let (_, out) = conv_dims(self.geometry, &x, ws)?;
        if out[..] != *gs {
            return Err(Fail::Mismatch(shape_of(gs), out));
        }
        Ok(Shape::from_slice(&x))
    }
    fn forward(&self, v: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (gy, w) = (fin(v, 0), fin(v, 1));
        let (d, _) = conv_dims(self.geometry, shape, w.shape())?;
        let w2t = weight2(&w, &d).reversed_axes();
        let o = w.shape()[0];
        let mut out = ArrayD::zeros(shape);
        let mut cols = Array2::zeros((w2t.nrows(), d.ho * d.wo));
        for n in 0..shape[0] {
            let gn = gy.index_axis(Axis(0), n);
            let g2 = gn.to_shape((o, d.ho * d.wo)).expect("sized");
            crate::gemm::gemm(T::one(), &w2t.view(), &g2.view(), T::zero(), &mut cols.view_mut());
            let out3 = out.index_axis_mut(Axis(0), n).into_dimensionality().expect("rank 3");
            col2im(&cols, &d, out3);
        }
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        // out = Aᵀ(gy; w), linear in each: d/dgy = conv2d(u, w), d/dw = weight_grad(u, gy).
        let (gy, w) = (b.inputs[0], b.inputs[1]);
        let geometry = self.geometry;
        let ggy = if b.needs[0] { Some(g.push(Op::Conv2d(Conv2d { geometry }), &[b.grad, w])?) } else { None };
        let gw = if b.needs[1] {
            let ws = g.shape_of(w);
            let kernel_hw = [ws[2], ws[3]];
            Some(g.push(Op::Conv2dWeightGrad(Conv2dWeightGrad { geometry, kernel_hw }), &[b.grad, gy])?)
        } else {
            None
        };
        grads([ggy, gw])
    }
}

impl<T: Float> Rule<T> for Conv2dWeightGrad {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        let (xs, gs) = (s[0], s[1]);
        rank4(xs, "input")?;
        rank4(gs, "gradient")?;
        let w = [gs[1], xs[1], self.kernel_hw[0], self.kernel_hw[1]];
        let (_, out) = conv_dims(self.geometry, xs, &w)?;
        if out[..] != *gs {
            return Err(Fail::Mismatch(shape_of(gs), out));
        }
        Ok(Shape::from_slice(&w))
    }
    fn forward(&self, v: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (x, gy) = (fin(v, 0), fin(v, 1));
        let (d, _) = conv_dims(self.geometry, x.shape(), shape)?;
        let x4 = x.view().into_dimensionality::<Ix4>().expect("rank 4");
        let o = shape[0];
        let mut acc = Array2::<T>::zeros((o, d.c * d.kh * d.kw));
        for n in 0..x.shape()[0] {
            let cols = im2col(x4.index_axis(Axis(0), n), &d);
            let gn = gy.index_axis(Axis(0), n);
            let g2 = gn.to_shape((o, d.ho * d.wo)).expect("sized");
            crate::gemm::gemm(T::one(), &g2.view(), &cols.t(), T::one(), &mut acc.view_mut());
        }
        Ok(acc.into_shape_with_order(IxDyn(shape)).expect("sized"))
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        // out = W(x; gy), linear in each: d/dx = input_grad(gy, u), d/dgy = conv2d(x, u).
        let (x, gy) = (b.inputs[0], b.inputs[1]);
        let geometry = self.geometry;
        let gx = if b.needs[0] {
            let xs = g.shape_of(x);
            let input_hw = [xs[2], xs[3]];
            Some(g.push(Op::Conv2dInputGrad(Conv2dInputGrad { geometry, input_hw }), &[gy, b.grad])?)
        } else {
            None
        };
        let ggy = if b.needs[1] { Some(g.push(Op::Conv2d(Conv2d { geometry }), &[x, b.grad])?) } else { None };
        grads([gx, ggy])
    }
}

/// A sum over a window of channels (axis 1): `out[:, c] = Σ_{c' = c-before}^{c+after} x[:, c']`,
/// the window cut at the first and last channel. Linear; its adjoint is the same
/// op with `before` and `after` swapped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelWindowSum {
    /// Channels before `c` in the window.
    pub before: usize,
    /// Channels after `c` in the window.
    pub after: usize,
}

impl<T: Float> Rule<T> for ChannelWindowSum {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 1)?;
        if s[0].len() < 2 {
            return Err(Fail::Invalid(format!("needs a channel axis (rank >= 2), got rank {}", s[0].len())));
        }
        Ok(shape_of(s[0]))
    }
    fn forward(&self, v: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let x = fin(v, 0);
        let c = shape[1];
        let mut out = ArrayD::zeros(shape);
        for o in 0..c {
            let lo = o.saturating_sub(self.before);
            let hi = o.saturating_add(self.after).min(c.saturating_sub(1));
            let mut dst = out.index_axis_mut(Axis(1), o);
            for src in lo..=hi {
                dst += &x.index_axis(Axis(1), src);
            }
        }
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let adj = ChannelWindowSum { before: self.after, after: self.before };
        grads([Some(g.push(Op::ChannelWindowSum(adj), &[b.grad])?)])
    }
}

/// Builders: the convolution family.
impl<T: Float> Graph<T> {
    /// `conv2d(x, w) + bias` as `torch.nn.functional.conv2d(x, w, bias, stride, padding)`:
    /// NCHW, cross-correlation, zero padding. `x [N, C, H, W]`, `w [O, C, kh, kw]`,
    /// `bias [O]`; output `[N, O, (H+2p-kh)/s+1, (W+2p-kw)/s+1]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if the channels differ,
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for wrong ranks or a kernel that does not fit.
    pub fn conv2d(
        &mut self,
        x: NodeId,
        w: NodeId,
        bias: Option<NodeId>,
        stride: usize,
        padding: usize,
    ) -> Result<NodeId> {
        let geometry = Conv2dGeometry { stride: [stride; 2], padding: [padding; 2] };
        let y = self.push(Op::Conv2d(Conv2d { geometry }), &[x, w])?;
        match bias {
            None => Ok(y),
            Some(b) => {
                let o = self.shape_of(y)[1];
                if self.shape(b)? != [o] {
                    let f = Fail::Mismatch(Shape::from_slice(&[o]), self.shape_of(b).iter().copied().collect());
                    return Err(self.fail("conv2d", f, &[y, b]));
                }
                let b4 = self.reshape(b, &[1, o, 1, 1])?;
                self.add(y, b4)
            }
        }
    }

    /// Local response normalization across channels, as
    /// `torch.nn.functional.local_response_norm(x, size, alpha, beta, k)`:
    /// `x / (k + alpha/size · Σ_{window} x²)^beta`, the window `c - size/2 ..= c + (size-1)/2`
    /// cut at the edges, the divisor always `size`. Composed of primitives, so it
    /// differentiates to any order.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for rank < 2 or `size == 0`.
    pub fn local_response_norm(&mut self, x: NodeId, size: usize, alpha: f64, beta: f64, k: f64) -> Result<NodeId> {
        self.check(x, "local_response_norm")?;
        if size == 0 {
            return Err(self.fail("local_response_norm", Fail::Invalid("size must be at least 1".into()), &[x]));
        }
        let sq = self.square(x)?;
        let win = ChannelWindowSum { before: size / 2, after: (size - 1) / 2 };
        let s = self.push(Op::ChannelWindowSum(win), &[sq])?;
        let d = self.affine(s, alpha / size as f64, k)?;
        let d = self.pow_scalar(d, -beta)?;
        self.mul(x, d)
    }

    /// Max pooling over non-overlapping `k × k` windows, `[N, C, H, W] -> [N, C, H/k, W/k]`
    /// (PyTorch's `max_pool2d(x, k)` when `k` divides `H` and `W`). Composed of a
    /// reshape and a max, so it differentiates to any order; ties within a window
    /// share the gradient evenly.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a rank other than 4,
    /// `k = 0`, or a `k` that does not divide the height and width.
    pub fn max_pool2d(&mut self, x: NodeId, k: usize) -> Result<NodeId> {
        self.check(x, "max_pool2d")?;
        let s = self.shape_of(x).to_vec();
        if s.len() != 4 || k == 0 || !s[2].is_multiple_of(k) || !s[3].is_multiple_of(k) {
            let f = Fail::Invalid(format!("needs [N, C, H, W] with H and W divisible by k = {k}"));
            return Err(self.fail("max_pool2d", f, &[x]));
        }
        let r = self.reshape(x, &[s[0], s[1], s[2] / k, k, s[3] / k, k])?;
        self.max(r, &[3, 5], false)
    }
}
