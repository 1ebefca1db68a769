//! Elementwise ops: broadcasting arithmetic, scalar affine maps, powers, exp/log,
//! comparisons (masks), `where`, `clamp` and `detach`.

use ndarray::{ArrayD, ArrayViewD, Zip};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{arity, broadcast, fin, grads, shape_of, Back, FResult, Grads, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::gemm::for_rows;
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Value};

macro_rules! unit_ops {
    ($($(#[$m:meta])* $t:ident),*) => {$(
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct $t;
    )*};
}

unit_ops!(
    /// `a + b` with broadcasting. d/da = 1, d/db = 1.
    Add,
    /// `a - b` with broadcasting. d/da = 1, d/db = -1.
    Sub,
    /// `a * b` with broadcasting. d/da = b, d/db = a.
    Mul,
    /// `a / b` with broadcasting. d/da = 1/b, d/db = -a/b².
    Div,
    /// `exp(x)`. d/dx = exp(x).
    Exp,
    /// `ln(x)`. d/dx = 1/x.
    Log,
    /// `sqrt(x)`. d/dx = 1/(2 sqrt(x)).
    Sqrt,
    /// `|x|`. d/dx = sign(x) (0 at 0, as PyTorch).
    Abs,
    /// `sign(x)` in {-1, 0, 1}; not differentiable (gradient 0).
    Sign,
    /// `where(cond, a, b)`: `a` where `cond != 0`, else `b`, broadcasting all three.
    /// d/da = [cond != 0], d/db = [cond == 0]; `cond` gets no gradient.
    Where,
    /// Identity forward, no gradient (stop-gradient, PyTorch's `detach`).
    Detach
);

fn binary_infer(shapes: &[&[usize]]) -> FResult<Shape> {
    arity(shapes, 2)?;
    broadcast(shapes[0], shapes[1])
}

macro_rules! binary_forward {
    ($t:ty, $op:tt) => {
        fn infer(&self, shapes: &[&[usize]]) -> FResult<Shape> {
            binary_infer(shapes)
        }
        fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
            Ok(binary_row_major(x[0], x[1], shape, |a, o| a $op o).unwrap_or_else(|| &fin(x, 0) $op &fin(x, 1)))
        }
        fn forward_in_place(&self, acc: &mut ArrayD<T>, pos: usize, x: &[&Value<T>]) -> bool {
            let other = fin(x, 1 - pos);
            if pos == 0 {
                combine_in_place(acc, &other, |a, o| a $op o);
            } else {
                combine_in_place(acc, &other, |a, o| o $op a);
            }
            true
        }
    };
}

/// `f(a, b)` broadcast to `shape`, written in one pass into a fresh buffer when
/// either operand is row-major and already of the result's shape and the other is
/// row-major too (of that shape, its trailing axes, or a scalar); else computed into
/// a copy of the full-shaped row-major operand, the other broadcast over it by
/// [`combine_in_place`]. `None` when neither operand is full-shaped and row-major.
#[inline(always)]
fn binary_row_major<T: Float>(
    a: &Value<T>,
    b: &Value<T>,
    shape: &[usize],
    f: impl Fn(T, T) -> T + Sync,
) -> Option<ArrayD<T>> {
    let (full, other, swap) = if a.shape() == shape && a.float_slice().is_some() {
        (a, b, false)
    } else if b.shape() == shape && b.float_slice().is_some() {
        (b, a, true)
    } else {
        return None;
    };
    let x = full.float_slice().expect("checked");
    if let Some(o) = other.float_slice().filter(|o| fits_rows(shape, other.shape(), o.len())) {
        // SAFETY: `map_rows` writes every element of `out` and reads none of them.
        return Some(unsafe {
            super::fresh::filled(shape, |out| {
                if swap {
                    map_rows(out, x, o, &|x, o| f(o, x));
                } else {
                    map_rows(out, x, o, &f);
                }
            })
        });
    }
    let mut acc = full.float_copy();
    if swap {
        combine_in_place(&mut acc, &other.float(), |x, o| f(o, x));
    } else {
        combine_in_place(&mut acc, &other.float(), f);
    }
    Some(acc)
}

/// Whether `o` (shape `os`, `len` elements) repeats over a row-major `shape` in
/// whole rows: the same shape, its trailing axes (leading 1s allowed: a bias), or
/// a scalar.
fn fits_rows(shape: &[usize], os: &[usize], len: usize) -> bool {
    let lead = os.iter().take_while(|&&d| d == 1).count();
    let tail = &os[lead..];
    len > 0 && tail.len() <= shape.len() && shape[shape.len() - tail.len()..] == *tail
}

/// `out[j] = f(x[j], o[j mod o.len()])`, `o.len()` dividing `x.len()`: split over the
/// engine's threads when large (each element's value does not depend on the split).
#[inline(always)]
fn map_rows<T: Float>(out: &mut [T], x: &[T], o: &[T], f: &(impl Fn(T, T) -> T + Sync)) {
    let w = o.len();
    if w == x.len() {
        for_rows(out, 1, &|first, blk| {
            let n = blk.len();
            crate::simd::vectorized(
                #[inline(always)]
                || crate::simd::map2(blk, &x[first..first + n], &o[first..first + n], f),
            );
        });
    } else if w == 1 {
        let y = o[0];
        for_rows(out, 1, &|first, blk| {
            let n = blk.len();
            crate::simd::vectorized(
                #[inline(always)]
                || crate::simd::map1(blk, &x[first..first + n], |v| f(v, y)),
            );
        });
    } else {
        for_rows(out, w, &|first, blk| {
            let x = &x[first * w..first * w + blk.len()];
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for (row, xr) in blk.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
                        crate::simd::map2(row, xr, o, f);
                    }
                },
            );
        });
    }
}

/// `acc[j] = f(acc[j], other[j])`, `other` broadcast to `acc`'s shape (checked when
/// the op was recorded). A row-major `other` of `acc`'s shape, or matching its trailing
/// axes (a bias), or a scalar, is combined in passes that vectorize, split over the
/// engine's threads when large.
#[inline(always)]
pub(crate) fn combine_in_place<T: Float>(acc: &mut ArrayD<T>, other: &ArrayViewD<'_, T>, f: impl Fn(T, T) -> T + Sync) {
    let fits = fits_rows(acc.shape(), other.shape(), other.len());
    if let (true, Some(o), Some(a)) = (fits, other.as_slice(), acc.as_slice_mut()) {
        let w = o.len();
        if w == a.len() {
            for_rows(a, 1, &|first, blk| {
                let n = blk.len();
                crate::simd::vectorized(
                    #[inline(always)]
                    || crate::simd::update1(blk, &o[first..first + n], &f),
                );
            });
        } else if w == 1 {
            // A scalar (a loss's upstream gradient): one pass, not a pass per element.
            let y = o[0];
            for_rows(a, 1, &|_, blk| {
                crate::simd::vectorized(
                    #[inline(always)]
                    || {
                        for x in blk.iter_mut() {
                            *x = f(*x, y);
                        }
                    },
                );
            });
        } else {
            for_rows(a, w, &|_, blk| {
                crate::simd::vectorized(
                    #[inline(always)]
                    || {
                        for row in blk.chunks_exact_mut(w) {
                            crate::simd::update1(row, o, &f);
                        }
                    },
                );
            });
        }
        return;
    }
    acc.zip_mut_with(other, |x, &y| *x = f(*x, y));
}

/// `acc[j] = f(acc[j])` on a row-major buffer, at the machine's vector width and split
/// over the engine's threads when large; `false` (nothing done) for another layout.
#[inline(always)]
pub(crate) fn apply_in_place<T: Float>(acc: &mut ArrayD<T>, f: impl Fn(T) -> T + Sync) -> bool {
    let Some(s) = acc.as_slice_mut() else { return false };
    for_rows(s, 1, &|_, blk| {
        crate::simd::vectorized(
            #[inline(always)]
            || {
                for v in blk.iter_mut() {
                    *v = f(*v);
                }
            },
        );
    });
    true
}

impl<T: Float> Rule<T> for Add {
    binary_forward!(Add, +);
    fn backward(&self, _: &mut Graph<T>, b: &Back) -> Result<Grads> {
        grads([Some(b.grad), Some(b.grad)])
    }
}

impl<T: Float> Rule<T> for Sub {
    binary_forward!(Sub, -);
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let gb = if b.needs[1] { Some(g.neg(b.grad)?) } else { None };
        grads([Some(b.grad), gb])
    }
}

impl<T: Float> Rule<T> for Mul {
    binary_forward!(Mul, *);
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let ga = if b.needs[0] { Some(g.mul(b.grad, b.inputs[1])?) } else { None };
        let gb = if b.needs[1] { Some(g.mul(b.grad, b.inputs[0])?) } else { None };
        grads([ga, gb])
    }
}

impl<T: Float> Rule<T> for Div {
    binary_forward!(Div, /);
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let ga = if b.needs[0] { Some(g.div(b.grad, b.inputs[1])?) } else { None };
        let gb = if b.needs[1] {
            // d(a/b)/db = -(a/b)/b = -out/b
            let t = g.mul(b.grad, b.out)?;
            let t = g.div(t, b.inputs[1])?;
            Some(g.neg(t)?)
        } else {
            None
        };
        grads([ga, gb])
    }
}

/// The sum of any number of same-shaped inputs. d/dx_k = 1. The engine sums the
/// gradient contributions of fan-out with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddN;

impl<T: Float> Rule<T> for AddN {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        let first = s.first().ok_or_else(|| super::Fail::Invalid("needs at least one input".into()))?;
        if let Some(other) = s.iter().find(|x| *x != first) {
            return Err(super::Fail::Mismatch(shape_of(first), shape_of(other)));
        }
        Ok(shape_of(first))
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        // The inputs' slices inline (no allocation per call: a step's fan-out sums two).
        let parts: Option<SmallVec<[&[T]; 4]>> =
            if x.len() >= 2 { x.iter().map(|v| v.float_slice()).collect() } else { None };
        if let Some(parts) = parts {
            // Row-major inputs: one pass, summed in argument order as below.
            // SAFETY: `map2` writes every element of each block before `update1` reads it.
            return Ok(unsafe {
                super::fresh::filled(shape, |out| {
                    for_rows(out, 1, &|first, blk| {
                        let r = first..first + blk.len();
                        crate::simd::vectorized(
                            #[inline(always)]
                            || {
                                crate::simd::map2(blk, &parts[0][r.clone()], &parts[1][r.clone()], |a, b| a + b);
                                for p in &parts[2..] {
                                    crate::simd::update1(blk, &p[r.clone()], |a, b| a + b);
                                }
                            },
                        );
                    })
                })
            });
        }
        let mut out = x[0].float_copy();
        for v in &x[1..] {
            combine_in_place(&mut out, &v.float(), |a, o| a + o);
        }
        Ok(out)
    }
    fn backward(&self, _: &mut Graph<T>, b: &Back) -> Result<Grads> {
        Ok(b.inputs.iter().map(|_| Some(b.grad)).collect())
    }
}

/// `x * scale + shift` for scalars. d/dx = scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    /// The factor.
    pub scale: f64,
    /// The offset.
    pub shift: f64,
}

pub(crate) fn unary_infer(shapes: &[&[usize]]) -> FResult<Shape> {
    arity(shapes, 1)?;
    Ok(shape_of(shapes[0]))
}

impl<T: Float> Rule<T> for Affine {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        unary_infer(s)
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        let (a, c) = (T::of(self.scale), T::of(self.shift));
        Ok(if self.shift == 0.0 { fin(x, 0).mapv(|v| v * a) } else { fin(x, 0).mapv(|v| v * a + c) })
    }
    fn forward_in_place(&self, acc: &mut ArrayD<T>, _: usize, _: &[&Value<T>]) -> bool {
        let (a, c) = (T::of(self.scale), T::of(self.shift));
        if self.shift == 0.0 {
            apply_in_place(acc, |v| v * a)
        } else {
            apply_in_place(acc, |v| v * a + c)
        }
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let gx = if self.scale == 1.0 { b.grad } else { g.mul_scalar(b.grad, self.scale)? };
        grads([Some(gx)])
    }
}

/// `x^p` for a scalar exponent `p`. d/dx = p x^(p-1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowScalar {
    /// The exponent.
    pub exponent: f64,
}

impl<T: Float> Rule<T> for PowScalar {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        unary_infer(s)
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        let p = self.exponent;
        let x = fin(x, 0);
        Ok(if p == 2.0 {
            x.mapv(|v| v * v)
        } else if p == 1.0 {
            x.to_owned()
        } else if p == 0.5 {
            x.mapv(|v| v.sqrt())
        } else if p == -1.0 {
            x.mapv(|v| T::one() / v)
        } else if p.fract() == 0.0 && p.abs() < 64.0 {
            x.mapv(|v| v.powi(p as i32))
        } else {
            let pt = T::of(p);
            x.mapv(|v| v.powf(pt))
        })
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let p = self.exponent;
        let x = b.inputs[0];
        let gx = if p == 0.0 {
            g.mul_scalar(b.grad, 0.0)?
        } else if p == 1.0 {
            b.grad
        } else if p == 2.0 {
            let d = g.mul_scalar(x, 2.0)?;
            g.mul(b.grad, d)?
        } else {
            let d = g.pow_scalar(x, p - 1.0)?;
            let d = g.mul_scalar(d, p)?;
            g.mul(b.grad, d)?
        };
        grads([Some(gx)])
    }
}

macro_rules! unary_map {
    ($t:ty, $f:expr) => {
        fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
            $crate::ops::elementwise::unary_infer(s)
        }
        fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
            let a = $crate::ops::fin(x, 0);
            if a.as_slice().is_none() {
                return Ok(a.mapv($f));
            }
            // Row-major: one pass at the machine's vector width (`forward_into`).
            // SAFETY: `forward_into` writes every element of `v` and reads none of them.
            Ok(unsafe {
                $crate::ops::fresh::filled(a.shape(), |v| {
                    let _written = <Self as Rule<T>>::forward_into(self, x, &[], v);
                })
            })
        }
        fn forward_in_place(&self, acc: &mut ArrayD<T>, _: usize, _: &[&Value<T>]) -> bool {
            $crate::ops::elementwise::apply_in_place(acc, $f)
        }
        fn forward_into(&self, x: &[&Value<T>], _: &[usize], out: &mut [T]) -> bool {
            let a = $crate::ops::fin(x, 0);
            let Some(s) = a.as_slice().filter(|s| s.len() == out.len()) else { return false };
            $crate::gemm::for_rows(out, 1, &|first, blk| {
                let n = blk.len();
                $crate::simd::vectorized(
                    #[inline(always)]
                    || $crate::simd::map1(blk, &s[first..first + n], $f),
                )
            });
            true
        }
    };
}
pub(crate) use unary_map;

impl<T: Float> Rule<T> for Exp {
    unary_map!(Exp, |v: T| v.exp());
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        grads([Some(g.mul(b.grad, b.out)?)])
    }
}

impl<T: Float> Rule<T> for Log {
    unary_map!(Log, |v: T| v.ln());
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        grads([Some(g.div(b.grad, b.inputs[0])?)])
    }
}

impl<T: Float> Rule<T> for Sqrt {
    unary_map!(Sqrt, |v: T| v.sqrt());
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let h = g.mul_scalar(b.grad, 0.5)?;
        grads([Some(g.div(h, b.out)?)])
    }
}

fn sign<T: Float>(v: T) -> T {
    if v > T::zero() {
        T::one()
    } else if v < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}

impl<T: Float> Rule<T> for Abs {
    unary_map!(Abs, |v: T| v.abs());
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let s = g.sign(b.inputs[0])?;
        grads([Some(g.mul(b.grad, s)?)])
    }
}

impl<T: Float> Rule<T> for Sign {
    unary_map!(Sign, sign);
    fn backward(&self, _: &mut Graph<T>, _: &Back) -> Result<Grads> {
        grads([None])
    }
}

impl<T: Float> Rule<T> for Detach {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        unary_infer(s)
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        Ok(fin(x, 0).to_owned())
    }
    fn backward(&self, _: &mut Graph<T>, _: &Back) -> Result<Grads> {
        grads([None])
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Cmp {
    fn test<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        }
    }
}

fn one_if<T: Float>(c: bool) -> T {
    if c {
        T::one()
    } else {
        T::zero()
    }
}

/// `[a cmp b]` as 0/1 floats, broadcasting; not differentiable (a mask).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compare {
    /// The comparison.
    pub cmp: Cmp,
}

impl<T: Float> Rule<T> for Compare {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        binary_infer(s)
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let mut out = ArrayD::zeros(shape);
        let (a, b) = (fin(x, 0), fin(x, 1));
        let (a, b) = (a.broadcast(shape).expect("inferred"), b.broadcast(shape).expect("inferred"));
        Zip::from(&mut out).and(&a).and(&b).for_each(|o, &a, &b| *o = one_if(self.cmp.test(a, b)));
        Ok(out)
    }
    fn backward(&self, _: &mut Graph<T>, _: &Back) -> Result<Grads> {
        grads([None, None])
    }
}

/// `[x cmp value]` as 0/1 floats; not differentiable (a mask).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareScalar {
    /// The comparison.
    pub cmp: Cmp,
    /// The right-hand scalar.
    pub value: f64,
}

impl<T: Float> Rule<T> for CompareScalar {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        unary_infer(s)
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        let c = T::of(self.value);
        Ok(fin(x, 0).mapv(|v| one_if(self.cmp.test(v, c))))
    }
    fn backward(&self, _: &mut Graph<T>, _: &Back) -> Result<Grads> {
        grads([None])
    }
}

impl<T: Float> Rule<T> for Where {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 3)?;
        broadcast(&broadcast(s[0], s[1])?, s[2])
    }
    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let mut out = ArrayD::zeros(shape);
        let (c, a, b) = (fin(x, 0), fin(x, 1), fin(x, 2));
        let c = c.broadcast(shape).expect("inferred");
        let a = a.broadcast(shape).expect("inferred");
        let b = b.broadcast(shape).expect("inferred");
        Zip::from(&mut out).and(&c).and(&a).and(&b).for_each(|o, &c, &a, &b| {
            *o = if c != T::zero() { a } else { b };
        });
        Ok(out)
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let zero = g.scalar(0.0);
        let c = b.inputs[0];
        let ga = if b.needs[1] { Some(g.where_(c, b.grad, zero)?) } else { None };
        let gb = if b.needs[2] { Some(g.where_(c, zero, b.grad)?) } else { None };
        grads([None, ga, gb])
    }
}

/// `clamp(x, min, max)` (either bound optional). d/dx = [min <= x <= max], as PyTorch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clamp {
    /// The lower bound.
    pub min: Option<f64>,
    /// The upper bound.
    pub max: Option<f64>,
}

impl<T: Float> Rule<T> for Clamp {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        unary_infer(s)
    }
    fn forward(&self, x: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
        let lo = self.min.map(T::of).unwrap_or_else(T::neg_infinity);
        let hi = self.max.map(T::of).unwrap_or_else(T::infinity);
        // max(v, lo) first, then min(·, hi): with lo > hi every element is hi, as in PyTorch.
        Ok(fin(x, 0).mapv(|v| {
            let v = if v < lo { lo } else { v };
            if v > hi {
                hi
            } else {
                v
            }
        }))
    }
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let x = b.inputs[0];
        let mut gx = b.grad;
        if let Some(lo) = self.min {
            let m = g.compare_scalar(x, Cmp::Ge, lo)?;
            gx = g.mul(gx, m)?;
        }
        if let Some(hi) = self.max {
            let m = g.compare_scalar(x, Cmp::Le, hi)?;
            gx = g.mul(gx, m)?;
        }
        grads([Some(gx)])
    }
}

/// Builders: the elementwise family.
impl<T: Float> Graph<T> {
    /// `a + b`, broadcasting as NumPy and PyTorch do. d/da = d/db = 1.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if the shapes do not broadcast.
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(super::Op::Add(Add), &[a, b])
    }
    /// `a - b`, broadcasting. d/da = 1, d/db = -1.
    ///
    /// # Errors
    /// As [`Graph::add`].
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(super::Op::Sub(Sub), &[a, b])
    }
    /// `a * b` elementwise, broadcasting. d/da = b, d/db = a.
    ///
    /// # Errors
    /// As [`Graph::add`].
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(super::Op::Mul(Mul), &[a, b])
    }
    /// `a / b` elementwise, broadcasting. d/da = 1/b, d/db = -a/b².
    ///
    /// # Errors
    /// As [`Graph::add`].
    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(super::Op::Div(Div), &[a, b])
    }
    /// The sum of same-shaped `xs` (no broadcasting), as one node. d/dx_k = 1.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if the shapes differ;
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for no inputs.
    pub fn add_n(&mut self, xs: &[NodeId]) -> Result<NodeId> {
        if xs.len() == 1 {
            self.check(xs[0], "add_n")?;
            return Ok(xs[0]);
        }
        self.push(super::Op::AddN(AddN), xs)
    }
    /// `x * scale + shift`. d/dx = scale.
    ///
    /// # Errors
    /// [`Error::ForeignNode`](crate::Error::ForeignNode) for another graph's id.
    pub fn affine(&mut self, x: NodeId, scale: f64, shift: f64) -> Result<NodeId> {
        self.push(super::Op::Affine(Affine { scale, shift }), &[x])
    }
    /// `-x`. d/dx = -1.
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn neg(&mut self, x: NodeId) -> Result<NodeId> {
        self.affine(x, -1.0, 0.0)
    }
    /// `x + c`. d/dx = 1.
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn add_scalar(&mut self, x: NodeId, c: f64) -> Result<NodeId> {
        self.affine(x, 1.0, c)
    }
    /// `x * c`. d/dx = c.
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn mul_scalar(&mut self, x: NodeId, c: f64) -> Result<NodeId> {
        self.affine(x, c, 0.0)
    }
    /// `c - x` (PyTorch's `rsub`). d/dx = -1.
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn rsub_scalar(&mut self, x: NodeId, c: f64) -> Result<NodeId> {
        self.affine(x, -1.0, c)
    }
    /// `x^p`. d/dx = p x^(p-1).
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn pow_scalar(&mut self, x: NodeId, p: f64) -> Result<NodeId> {
        self.push(super::Op::PowScalar(PowScalar { exponent: p }), &[x])
    }
    /// `x²`. d/dx = 2x.
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn square(&mut self, x: NodeId) -> Result<NodeId> {
        self.pow_scalar(x, 2.0)
    }
    /// `exp(x)`. d/dx = exp(x).
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn exp(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(super::Op::Exp(Exp), &[x])
    }
    /// `ln(x)`. d/dx = 1/x.
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn log(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(super::Op::Log(Log), &[x])
    }
    /// `sqrt(x)`. d/dx = 1/(2 sqrt x).
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn sqrt(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(super::Op::Sqrt(Sqrt), &[x])
    }
    /// `|x|`. d/dx = sign(x).
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn abs(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(super::Op::Abs(Abs), &[x])
    }
    /// `sign(x)`; gradient 0.
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn sign(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(super::Op::Sign(Sign), &[x])
    }
    /// `[a cmp b]` as 0/1, broadcasting; gradient 0.
    ///
    /// # Errors
    /// As [`Graph::add`].
    pub fn compare(&mut self, a: NodeId, cmp: Cmp, b: NodeId) -> Result<NodeId> {
        self.push(super::Op::Compare(Compare { cmp }), &[a, b])
    }
    /// `[x cmp value]` as 0/1; gradient 0.
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn compare_scalar(&mut self, x: NodeId, cmp: Cmp, value: f64) -> Result<NodeId> {
        self.push(super::Op::CompareScalar(CompareScalar { cmp, value }), &[x])
    }
    /// `a` where `cond != 0`, else `b` (PyTorch's `torch.where`), broadcasting all three.
    ///
    /// # Errors
    /// As [`Graph::add`].
    pub fn where_(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(super::Op::Where(Where), &[cond, a, b])
    }
    /// `clamp(x, min, max)`, either bound optional. d/dx = [min <= x <= max].
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn clamp(&mut self, x: NodeId, min: Option<f64>, max: Option<f64>) -> Result<NodeId> {
        self.push(super::Op::Clamp(Clamp { min, max }), &[x])
    }
    /// Stop-gradient: the same value, through which no gradient flows (PyTorch's `detach`).
    ///
    /// # Errors
    /// As [`Graph::affine`].
    pub fn detach(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(super::Op::Detach(Detach), &[x])
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::{binary_row_major, combine_in_place, AddN, Rule};
    use crate::node::Value;

    /// Every vectorized case of `combine_in_place` and of `binary_row_major`'s one-pass
    /// path (same shape, trailing axes, scalar of rank 0 and of rank 2, either operand
    /// the full-shaped one) against ndarray's broadcasting: small, and large enough to
    /// be split over the engine's threads (37 rows: blocks of unequal size).
    #[test]
    fn elementwise_passes_match_broadcasting() {
        for full in [vec![3, 4, 5], vec![37, 3, 347]] {
            let acc = ArrayD::from_shape_fn(IxDyn(&full), |i| (i[0] * 20 + i[1] * 5 + i[2]) as f64 * 0.1);
            let (r, c) = (full[1], full[2]);
            for shape in [full.clone(), vec![r, c], vec![1, c], vec![], vec![1, 1]] {
                let n: usize = shape.iter().product();
                let other =
                    ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|k| k as f64 - 1.5).collect()).expect("sized");
                let mut got = acc.clone();
                combine_in_place(&mut got, &other.view(), |a, b| a * b - a);
                let want = &acc * &other - &acc;
                assert_eq!(got, want, "{full:?} combined with {shape:?}");
                let (a, o) = (Value::Float(acc.clone()), Value::Float(other.clone()));
                let got = binary_row_major(&a, &o, &full, |a, b| a * b - a).expect("row-major");
                assert_eq!(got, want, "{full:?} with {shape:?} in one pass");
                let got = binary_row_major(&o, &a, &full, |b, a| a * b - a).expect("row-major");
                assert_eq!(got, want, "{shape:?} with {full:?} in one pass");
            }
        }
    }

    /// A sum of several large inputs adds them in argument order, as a sum of small ones.
    #[test]
    fn add_n_sums_in_argument_order_at_every_size() {
        for n in [7, 100_003] {
            let parts: Vec<Value<f32>> = (0..4)
                .map(|k| Value::Float(ArrayD::from_shape_fn(IxDyn(&[n]), |i| ((i[0] * 7 + k * 13) % 29) as f32 * 0.37)))
                .collect();
            let refs: Vec<&Value<f32>> = parts.iter().collect();
            let got = AddN.forward(&refs, &[n]).expect("same shapes");
            let want = (0..n).map(|i| refs.iter().fold(0.0f32, |s, v| s + v.float()[[i]]));
            assert!(got.iter().zip(want).all(|(&g, w)| g.to_bits() == w.to_bits()), "{n} elements");
        }
    }
}
