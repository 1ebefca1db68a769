//! OpenBLAS, loaded at run time: the `cblas_?gemm` entry points and the operand
//! layouts they accept.

use std::any::TypeId;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
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
    /// The kernel family OpenBLAS chose for this CPU (`openblas_get_corename`).
    pub(super) core: String,
    _lib: libloading::Library,
}

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// OpenBLAS's kernel families without AVX2 and FMA: what an OpenBLAS too old to know
/// a CPU falls back to (Debian 12's 0.3.21 takes an Emerald Rapids Xeon for a
/// Prescott, whose SSE3 kernels run at a fifth of the pure-Rust ones there).
const PRE_AVX2_CORES: &[&str] = &[
    "prescott",
    "core2",
    "penryn",
    "dunnington",
    "nehalem",
    "sandybridge",
    "atom",
    "katmai",
    "coppermine",
    "northwood",
    "banias",
    "athlon",
    "opteron",
    "opteron_sse3",
    "barcelona",
    "bobcat",
    "nano",
    "unknown",
];

/// What loading OpenBLAS found: the library, or the kernel family it chose when that
/// family misses the CPU's vector units and the library was passed over for it.
struct Found {
    blas: Option<Blas>,
    passed_over: Option<String>,
}

pub(super) fn blas() -> Option<&'static Blas> {
    found().blas.as_ref()
}

/// The kernel family of an OpenBLAS passed over because it misses the CPU.
pub(super) fn passed_over() -> Option<&'static str> {
    found().passed_over.as_deref()
}

static FOUND: OnceLock<Found> = OnceLock::new();

/// The family [`name_cpu`] named in `OPENBLAS_CORETYPE` (the variable is then ours,
/// not the user's).
static NAMED: OnceLock<&'static str> = OnceLock::new();

/// Whether the engine has already looked for OpenBLAS (at its first product, or at
/// the first question about its backend).
pub(super) fn loaded() -> bool {
    FOUND.get().is_some()
}

fn found() -> &'static Found {
    FOUND.get_or_init(|| open().map_or(Found { blas: None, passed_over: None }, judge))
}

/// Keeps `blas`, or passes it over when its kernels miss the CPU's vector units. An
/// `OPENBLAS_CORETYPE` the user set is their choice, kept whatever it is; one that
/// [`name_cpu`] set is checked like OpenBLAS's own choice (a build that ignores the
/// variable, or a library that was not unloaded, still runs what it chose).
fn judge(blas: Blas) -> Found {
    let users = std::env::var_os("OPENBLAS_CORETYPE").is_some() && NAMED.get().is_none();
    if !users && misses(&blas.core, cpu_core_type()) {
        return Found { passed_over: Some(blas.core.clone()), blas: None };
    }
    Found { blas: Some(blas), passed_over: None }
}

/// The OpenBLAS kernel family this CPU's vector units call for: `SkylakeX` with
/// AVX-512, `Haswell` with AVX2 and FMA, else `None`.
pub(super) fn cpu_core_type() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
            return Some("SkylakeX");
        }
        if has!("avx2") && has!("fma") {
            return Some("Haswell");
        }
    }
    None
}

/// Whether OpenBLAS's kernel family `core` leaves out the vector units of a CPU that
/// calls for `cpu` ([`cpu_core_type`]).
pub(super) fn misses(core: &str, cpu: Option<&str>) -> bool {
    cpu.is_some() && PRE_AVX2_CORES.contains(&core.to_ascii_lowercase().as_str())
}

/// When the installed OpenBLAS would run kernels that miss this CPU's vector units,
/// sets `OPENBLAS_CORETYPE` to the family the CPU calls for and returns it. A library
/// that chose well is kept as the engine's, so that it is not started twice.
///
/// # Safety
/// It loads (and may unload) OpenBLAS and sets an environment variable: no other
/// thread may run (nor read the environment) meanwhile.
pub(super) unsafe fn name_cpu() -> Option<&'static str> {
    let off = matches!(std::env::var("UNROLLED_BLAS").as_deref(), Ok("off" | "0"));
    if off || std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return None;
    }
    let cpu = cpu_core_type()?;
    let probe = open()?;
    if !misses(&probe.core, Some(cpu)) {
        let _ = FOUND.set(judge(probe));
        return None;
    }
    // Unloading the probe's library lets OpenBLAS read the variable when the engine
    // loads it again.
    drop(probe);
    std::env::set_var("OPENBLAS_CORETYPE", cpu);
    let _ = NAMED.set(cpu);
    Some(cpu)
}

fn open() -> Option<Blas> {
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
        // SAFETY: loading OpenBLAS runs only its own initialisers; the symbols have
        // the standard CBLAS and OpenBLAS signatures declared here.
        unsafe {
            let lib = libloading::Library::new(name).ok()?;
            let sgemm = *lib.get::<Gemm<f32>>(b"cblas_sgemm\0").ok()?;
            let dgemm = *lib.get::<Gemm<f64>>(b"cblas_dgemm\0").ok()?;
            // The engine splits large products over its own workers ([`super::pool`]):
            // each call runs in the calling thread, so no second set of threads spins.
            if let Ok(set) = lib.get::<unsafe extern "C" fn(c_int)>(b"openblas_set_num_threads\0") {
                set(1);
            }
            let core = match lib.get::<unsafe extern "C" fn() -> *const c_char>(b"openblas_get_corename\0") {
                Ok(name) => {
                    let p = name();
                    if p.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(p).to_string_lossy().into_owned()
                    }
                }
                Err(_) => String::new(),
            };
            Some(Blas { sgemm, dgemm, core, _lib: lib })
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

#[cfg(test)]
mod tests {
    use super::misses;

    #[test]
    fn only_pre_avx2_kernels_on_a_vector_cpu_miss_it() {
        assert!(misses("Prescott", Some("SkylakeX")));
        assert!(misses("CORE2", Some("Haswell")));
        assert!(misses("Sandybridge", Some("Haswell")));
        assert!(!misses("Prescott", None));
        assert!(!misses("SkylakeX", Some("SkylakeX")));
        assert!(!misses("Haswell", Some("SkylakeX")));
        assert!(!misses("Zen", Some("SkylakeX")));
        assert!(!misses("", Some("SkylakeX")));
    }
}
