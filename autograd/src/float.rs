//! The element types a graph computes with.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use crate::node::DType;

/// A floating-point element type: `f32` (for speed) or `f64` (for gradient checks
/// and conformance). A [`Graph`](crate::Graph) is generic over it.
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + serde::Serialize
    + serde::de::DeserializeOwned
    + 'static
{
    /// The dtype tag of this type.
    const DTYPE: DType;
    /// Converts from `f64`, rounding to nearest.
    fn of(v: f64) -> Self;
    /// Widens to `f64`.
    fn f64(self) -> f64;
    /// `tanh` as the engine computes it: for `f32` a rational approximation within
    /// 4 ulp that the compiler vectorizes (the C library's `tanhf` is a scalar call
    /// several times slower); for `f64` the C library's `tanh`, exact to the last bit
    /// the conformance fixtures need.
    fn tanh_fast(self) -> Self;
    /// `exp` as the engine's activations compute it: for `f32` Cephes' polynomial
    /// (within 2 ulp, vectorizable; saturating to `e^±87`), for `f64` the C library's.
    fn exp_fast(self) -> Self;
}

impl Float for f32 {
    const DTYPE: DType = DType::F32;
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn tanh_fast(self) -> Self {
        tanh_f32(self)
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
}

/// Cephes' `expf`: `e^x = 2^n e^r` with `n = round(x log2 e)`, `r` reduced in two
/// steps (Cody–Waite) and `e^r` a degree-7 polynomial. Rounds without a library call
/// (the 1.5·2²³ trick) so that loops over it vectorize. Every step is a fused
/// multiply-add (`mul_add`: one rounding, so the same value at every vector width, and
/// half the instructions where the CPU has FMA).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    // `t`'s low mantissa bits hold the integer `n` (no float-to-int conversion).
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p: f32 = 1.987_569_1e-4;
    p = p.mul_add(r, 1.398_2e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 0.166_666_65);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    y * f32::from_bits((ni.wrapping_add(127) as u32) << 23)
}

/// Eigen's rational approximation of `tanh` for `f32` (odd degree-13 over even
/// degree-6 polynomial on `[-7.905, 7.905]`, saturated beyond, `x` itself near 0),
/// both polynomials evaluated by fused multiply-adds as `exp_f32`'s.
#[inline(always)]
fn tanh_f32(a: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A: [f32; 7] =
        [4.893_524_6e-3, 6.372_619_3e-4, 1.485_722_4e-5, 5.122_297e-8, -8.604_672e-11, 2.000_188e-13, -2.760_768_5e-16];
    const B: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let x = a.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = A[6];
    for &c in A[..6].iter().rev() {
        p = p.mul_add(x2, c);
    }
    let mut q = B[3];
    for &c in B[..3].iter().rev() {
        q = q.mul_add(x2, c);
    }
    let r = x * p / q;
    // A select, not a branch, so that loops over it vectorize.
    if a.abs() < 4e-4 {
        a
    } else {
        r
    }
}

impl Float for f64 {
    const DTYPE: DType = DType::F64;
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn tanh_fast(self) -> Self {
        self.tanh()
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_tanh_is_within_4_ulp_everywhere() {
        let mut worst: f64 = 0.0;
        for k in -200_000..=200_000 {
            let x = k as f32 * 5e-5 * (1.0 + (k as f32).abs() * 1e-5);
            let want = (x as f64).tanh();
            let got = super::tanh_f32(x) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1e-30));
        }
        assert!(worst < 4.0 * f32::EPSILON as f64, "worst relative error {worst}");
        assert!((1.0 - super::tanh_f32(100.0)) <= 4.0 * f32::EPSILON, "saturates");
        assert_eq!(super::tanh_f32(-100.0), -super::tanh_f32(100.0));
        assert!(super::tanh_f32(f32::NAN).is_nan());
    }

    #[test]
    fn fast_exp_is_within_2_ulp_in_range() {
        let mut worst: f64 = 0.0;
        for k in -870_000..=880_000 {
            let x = k as f32 * 1e-4;
            let want = (x as f64).exp();
            worst = worst.max((super::exp_f32(x) as f64 - want).abs() / want);
        }
        assert!(worst < 2.0 * f32::EPSILON as f64, "worst relative error {worst}");
        assert!(super::exp_f32(f32::NAN).is_nan());
        assert!(super::exp_f32(-1000.0) > 0.0 && super::exp_f32(-1000.0) < 1e-37);
    }
}
