//! The engine's one matrix multiply: `c = alpha * a @ b + beta * c` on 2-D views.
//!
//! Two backends compute it. OpenBLAS is loaded at run time when the machine has it
//! (`libopenblas.so.0`, from Debian's `libopenblas0` or `libopenblas-dev`): on small
//! per-step products and with two threads it is up to 2-3x faster than the pure-Rust
//! kernels. Without it (or with `UNROLLED_BLAS=off`) ndarray's `matrixmultiply` kernels
//! compute every product, so nothing needs installing for the library to work.
//! `UNROLLED_BLAS=/path/to/libopenblas.so` picks a specific library.
//!
//! ```
//! use ndarray::array;
//! let a = array![[1.0f64, 2.0], [3.0, 4.0]];
//! let b = array![[1.0f64, 0.0], [0.0, 1.0]];
//! let mut c = ndarray::Array2::zeros((2, 2));
//! unrolled_autograd::gemm::gemm(1.0, &a.view(), &b.t(), 0.0, &mut c.view_mut());
//! assert_eq!(c, a);
//! assert!(["openblas", "matrixmultiply"].contains(&unrolled_autograd::gemm::backend()));
//! ```

use std::any::TypeId;
use std::os::raw::c_int;
use std::sync::OnceLock;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use crate::float::Float;

/// CBLAS `?gemm` for the element type `F`.
type Gemm<F> = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    F,
    *const F,
    c_int,
    *const F,
    c_int,
    F,
    *mut F,
    c_int,
);

struct Blas {
    sgemm: Gemm<f32>,
    dgemm: Gemm<f64>,
    _lib: libloading::Library,
}

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

fn blas() -> Option<&'static Blas> {
    static BLAS: OnceLock<Option<Blas>> = OnceLock::new();
    BLAS.get_or_init(load).as_ref()
}

fn load() -> Option<Blas> {
    let choice = std::env::var("UNROLLED_BLAS").unwrap_or_default();
    if choice == "off" || choice == "0" {
        return None;
    }
    let names: Vec<String> = if choice.is_empty() {
        ["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"].iter().map(|s| s.to_string()).collect()
    } else {
        vec![choice]
    };
    names.iter().find_map(|name| {
        // SAFETY: loading OpenBLAS runs only its own initialisers; the two symbols
        // have the standard CBLAS signatures declared above.
        unsafe {
            let lib = libloading::Library::new(name).ok()?;
            let sgemm = *lib.get::<Gemm<f32>>(b"cblas_sgemm\0").ok()?;
            let dgemm = *lib.get::<Gemm<f64>>(b"cblas_dgemm\0").ok()?;
            Some(Blas { sgemm, dgemm, _lib: lib })
        }
    })
}

/// The backend computing matrix products in this process: `"openblas"` or
/// `"matrixmultiply"`.
pub fn backend() -> &'static str {
    if blas().is_some() {
        "openblas"
    } else {
        "matrixmultiply"
    }
}

/// How a 2-D view maps onto a row-major BLAS operand: `(transposed, leading dimension)`,
/// or `None` when its strides fit neither layout.
fn layout<T>(v: &ArrayView2<'_, T>) -> Option<(bool, c_int)> {
    let (r, c) = v.dim();
    let (s0, s1) = (v.strides()[0], v.strides()[1]);
    if c == 1 || s1 == 1 {
        let ld = if r <= 1 { c.max(1) as isize } else { s0 };
        (ld >= c.max(1) as isize).then(|| c_int::try_from(ld).ok().map(|ld| (false, ld)))?
    } else if r == 1 || s0 == 1 {
        let ld = if c <= 1 { r.max(1) as isize } else { s1 };
        (ld >= r.max(1) as isize).then(|| c_int::try_from(ld).ok().map(|ld| (true, ld)))?
    } else {
        None
    }
}

/// `c = alpha * a @ b + beta * c`. `a` is `[m, k]`, `b` is `[k, n]`, `c` is `[m, n]`;
/// transposed operands are passed as transposed views (`x.t()`), never copied.
///
/// # Panics
/// When the shapes do not agree (callers check them first, as every op's `infer` does).
pub fn gemm<T: Float>(alpha: T, a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, beta: T, c: &mut ArrayViewMut2<'_, T>) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2 && c.dim() == (m, n), "gemm shapes [{m}, {k}] @ [{k2}, {n}] -> {:?}", c.dim());
    if let Some(blas) = blas() {
        if m > 0 && n > 0 && k > 0 && blas_call(blas, alpha, a, b, beta, c) {
            return;
        }
    }
    general_mat_mul(alpha, a, b, beta, c);
}

/// [`gemm`] through the pure-Rust kernels only, whatever backend is loaded (for
/// comparing the two).
pub fn gemm_fallback<T: Float>(
    alpha: T,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    beta: T,
    c: &mut ArrayViewMut2<'_, T>,
) {
    general_mat_mul(alpha, a, b, beta, c);
}

fn blas_call<T: Float>(
    blas: &Blas,
    alpha: T,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    beta: T,
    c: &mut ArrayViewMut2<'_, T>,
) -> bool {
    let (Some((ta, lda)), Some((tb, ldb))) = (layout(a), layout(b)) else { return false };
    let (m, n) = c.dim();
    let k = a.dim().1;
    let cv = c.view();
    let Some((false, ldc)) = layout(&cv) else { return false };
    let (Ok(m), Ok(n), Ok(k)) = (c_int::try_from(m), c_int::try_from(n), c_int::try_from(k)) else { return false };
    let (ta, tb) = (if ta { TRANS } else { NO_TRANS }, if tb { TRANS } else { NO_TRANS });
    let (pa, pb, pc) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    // SAFETY: the layouts were checked above: every operand is addressed as a
    // row-major (or transposed) matrix with its leading dimension within the view,
    // and the element type is exactly f32 or f64 as the symbol expects.
    unsafe {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            (blas.sgemm)(
                ROW_MAJOR,
                ta,
                tb,
                m,
                n,
                k,
                alpha.f64() as f32,
                pa.cast(),
                lda,
                pb.cast(),
                ldb,
                beta.f64() as f32,
                pc.cast(),
                ldc,
            );
        } else if TypeId::of::<T>() == TypeId::of::<f64>() {
            (blas.dgemm)(
                ROW_MAJOR,
                ta,
                tb,
                m,
                n,
                k,
                alpha.f64(),
                pa.cast(),
                lda,
                pb.cast(),
                ldb,
                beta.f64(),
                pc.cast(),
                ldc,
            );
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    fn rand(r: usize, c: usize, seed: u64) -> Array2<f64> {
        let mut x = seed;
        Array2::from_shape_fn((r, c), |_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
    }

    #[test]
    fn backends_agree_on_every_layout() {
        for &(m, k, n) in &[(1, 1, 1), (1, 7, 5), (6, 1, 4), (5, 9, 1), (17, 33, 12)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    let a0 = if ta { rand(k, m, 1) } else { rand(m, k, 1) };
                    let b0 = if tb { rand(n, k, 2) } else { rand(k, n, 2) };
                    let a = if ta { a0.t() } else { a0.view() };
                    let b = if tb { b0.t() } else { b0.view() };
                    let c0 = rand(m, n, 3);
                    let mut c1 = c0.clone();
                    let mut c2 = c0.clone();
                    gemm(0.5, &a, &b, 2.0, &mut c1.view_mut());
                    gemm_fallback(0.5, &a, &b, 2.0, &mut c2.view_mut());
                    let want = a.dot(&b) * 0.5 + &c0 * 2.0;
                    for (x, y) in c1.iter().zip(want.iter()).chain(c2.iter().zip(want.iter())) {
                        assert!((x - y).abs() < 1e-13, "{m}x{k}x{n} ta={ta} tb={tb}: {x} vs {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn strided_views_and_f32() {
        let big = rand(10, 12, 4);
        let a = big.slice(s![1..5, 2..9]); // row stride 12, not contiguous rows
        let b = rand(7, 3, 5);
        let mut c = Array2::zeros((4, 3));
        gemm(1.0, &a, &b.view(), 0.0, &mut c.view_mut());
        let want = a.dot(&b);
        assert!(c.iter().zip(want.iter()).all(|(x, y)| (x - y).abs() < 1e-13));
        let every_other = big.slice(s![..;2, ..;2]); // no unit stride: the fallback computes it
        let (a, b) = (every_other.slice(s![.., ..6]), rand(6, 3, 6));
        let mut c = Array2::zeros((5, 3));
        gemm(1.0, &a, &b.view(), 0.0, &mut c.view_mut());
        let want = a.dot(&b);
        assert!(c.iter().zip(want.iter()).all(|(x, y)| (x - y).abs() < 1e-13));
        let af = big.mapv(|v| v as f32);
        let bf = rand(12, 2, 7).mapv(|v| v as f32);
        let mut cf = Array2::<f32>::zeros((10, 2));
        gemm(1.0f32, &af.view(), &bf.view(), 0.0, &mut cf.view_mut());
        let want = af.dot(&bf);
        assert!(cf.iter().zip(want.iter()).all(|(x, y)| (x - y).abs() < 1e-5));
    }
}
