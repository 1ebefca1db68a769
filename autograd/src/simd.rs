//! Elementwise kernels at the running CPU's vector width.
//!
//! The library is built for the baseline of its target (SSE2 on x86-64), so loops
//! vectorize four `f32` lanes wide. [`vectorized`] runs a kernel compiled again with
//! AVX-512 or AVX2 and FMA when the CPU has them (checked once, at run time), so a
//! binary built anywhere uses the width of the machine it runs on. Only elementwise
//! passes go through it: they compute the same values at every width (each lane
//! does the same scalar operations in the same order). `UNROLLED_SIMD=avx2` caps the
//! width at AVX2, `UNROLLED_SIMD=off` at the baseline.

use crate::float::Float;

/// Runs `f`, inlined into a copy compiled for the widest vector extension the CPU
/// has. `f` should be a kernel whose loops are `#[inline(always)]` helpers, so that
/// they are compiled in that copy.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            Level::Avx512 => {
                // SAFETY: the CPU has AVX-512F (checked by `level`).
                return unsafe { avx512(f) };
            }
            Level::Avx2 => {
                // SAFETY: the CPU has AVX2 and FMA (checked by `level`).
                return unsafe { avx2(f) };
            }
            Level::Base => {}
        }
    }
    f()
}

/// Whether the kernels may use AVX-512 (the CPU has it and `UNROLLED_SIMD` allows it).
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        level() == Level::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Base,
    Avx2,
    Avx512,
}

#[cfg(target_arch = "x86_64")]
fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("UNROLLED_SIMD").unwrap_or_default();
        let fma = is_x86_feature_detected!("fma");
        if cap == "off" {
            Level::Base
        } else if cap != "avx2" && fma && is_x86_feature_detected!("avx512f") {
            Level::Avx512
        } else if fma && is_x86_feature_detected!("avx2") {
            Level::Avx2
        } else {
            Level::Base
        }
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

// Elementwise passes over equal-length slices. As separate (inlined) functions their
// slices are known not to alias, so the loops vectorize without run-time checks.
#[inline(always)]
pub(crate) fn map1<T: Float>(out: &mut [T], a: &[T], f: impl Fn(T) -> T) {
    for (o, &a) in out.iter_mut().zip(a) {
        *o = f(a);
    }
}

#[inline(always)]
pub(crate) fn map2<T: Float>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = f(a, b);
    }
}

#[inline(always)]
pub(crate) fn map3<T: Float>(out: &mut [T], a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) {
    let n = out.len();
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    for j in 0..n {
        out[j] = f(a[j], b[j], c[j]);
    }
}

#[inline(always)]
pub(crate) fn map5<T: Float>(
    out: &mut [T],
    a: &[T],
    b: &[T],
    c: &[T],
    d: &[T],
    e: &[T],
    f: impl Fn(T, T, T, T, T) -> T,
) {
    let n = out.len();
    let (a, b, c, d, e) = (&a[..n], &b[..n], &c[..n], &d[..n], &e[..n]);
    for j in 0..n {
        out[j] = f(a[j], b[j], c[j], d[j], e[j]);
    }
}

#[inline(always)]
pub(crate) fn map4<T: Float>(out: &mut [T], a: &[T], b: &[T], c: &[T], d: &[T], f: impl Fn(T, T, T, T) -> T) {
    let n = out.len();
    let (a, b, c, d) = (&a[..n], &b[..n], &c[..n], &d[..n]);
    for j in 0..n {
        out[j] = f(a[j], b[j], c[j], d[j]);
    }
}

/// `out[j] = f(out[j], a[j])`: an update in place (an accumulation).
#[inline(always)]
pub(crate) fn update1<T: Float>(out: &mut [T], a: &[T], f: impl Fn(T, T) -> T) {
    for (o, &a) in out.iter_mut().zip(a) {
        *o = f(*o, a);
    }
}

/// `out[j] = f(out[j], a[j], b[j])`: an update in place from two other operands.
#[inline(always)]
pub(crate) fn update2<T: Float>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T, T) -> T) {
    let n = out.len();
    let (a, b) = (&a[..n], &b[..n]);
    for j in 0..n {
        out[j] = f(out[j], a[j], b[j]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_the_kernel_once() {
        let mut n = 0;
        let v = super::vectorized(|| {
            n += 1;
            (0..1000).map(|i| i as f32 * 0.5).sum::<f32>()
        });
        assert_eq!((n, v), (1, 249_750.0));
    }
}
