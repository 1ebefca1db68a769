//! OpenBLAS, loaded at run time: the `cblas_?gemm` entry points and the operand
//! layouts they accept.

use std::any::TypeId;
use std::os::raw::c_int;
use std::sync::OnceLock;

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

pub(super) struct Blas {
    sgemm: Gemm<f32>,
    dgemm: Gemm<f64>,
    _lib: libloading::Library,
}

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

pub(super) fn blas() -> Option<&'static Blas> {
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
            // The engine splits large products over its own workers ([`super::pool`]):
            // each call runs in the calling thread, so no second set of threads spins.
            if let Ok(set) = lib.get::<unsafe extern "C" fn(c_int)>(b"openblas_set_num_threads\0") {
                set(1);
            }
            Some(Blas { sgemm, dgemm, _lib: lib })
        }
    })
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

pub(super) fn blas_call<T: Float>(
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
