//! The engine's one matrix multiply: `c = alpha * a @ b + beta * c` on 2-D views.
//!
//! Three kernels compute it:
//! - `f32` products with few rows (a recurrent step's `[B, H] @ [H, 4H]` and its
//!   gradient) go to this crate's AVX-512 kernel when the CPU has AVX-512 (`skinny`):
//!   no packing of the weight per call, and a transposed weight packed once per
//!   replay (`Packed`). On those shapes it is up to twice as fast as OpenBLAS.
//! - Other products go to OpenBLAS, loaded at run time when the machine has it
//!   (`libopenblas.so.0`, from Debian's `libopenblas0` or `libopenblas-dev`): up to
//!   2-3x faster than the pure-Rust kernels. `UNROLLED_BLAS=/path/to/libopenblas.so`
//!   picks a specific library. An OpenBLAS too old to know the CPU runs kernels
//!   without AVX2 on it (Debian 12's 0.3.21 on an Emerald Rapids Xeon): it is passed
//!   over ([`openblas_passed_over`]) unless `OPENBLAS_CORETYPE` names its kernels,
//!   which [`name_cpu_for_openblas`] does from the CPU's features. A library named
//!   by `UNROLLED_BLAS` is judged the same way; setting `OPENBLAS_CORETYPE` yourself
//!   keeps it whatever it runs (a build for one older CPU, say).
//! - Without it (or with `UNROLLED_BLAS=off`) ndarray's `matrixmultiply` kernels
//!   compute them, so nothing needs installing for the library to work.
//!
//! Large products are split over [`threads`] threads (the engine's own workers, see
//! `pool`; OpenBLAS itself runs single-threaded in each of them).
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

mod blas;
mod packed;
mod pool;
mod skinny;

use std::any::TypeId;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ndarray::linalg::general_mat_mul;
use ndarray::{s, ArrayView2, ArrayViewMut2, Axis};

use crate::float::Float;
use blas::{blas, blas_call, passed_over};
pub(crate) use packed::{PackCache, Packed};
pub use pool::threads;
pub(crate) use pool::{for_row_blocks, for_rows, for_rows_of, rows_per_share};
pub(crate) use skinny::Upcoming;
use skinny::{Job, Src};

thread_local! {
    /// What the next skinny product on this thread asks the L2 cache for ([`upcoming`]).
    static UPCOMING: std::cell::Cell<Upcoming> = const { std::cell::Cell::new(Upcoming::EMPTY) };
}

/// Sets the memory the next kernel after the next skinny product on this thread reads:
/// that product's tiles ask the L2 cache for it while they compute (see
/// [`skinny::Upcoming`]). The product takes it; [`Upcoming::default`] clears it.
pub(crate) fn upcoming(next: Upcoming) {
    UPCOMING.set(next);
}

/// What [`upcoming`] set and no product took, cleared.
pub(crate) fn take_upcoming() -> Upcoming {
    UPCOMING.take()
}

/// Products with at most this many rows go to the skinny kernel.
const SKINNY_ROWS: usize = 128;
/// The farthest apart (in elements) the rows of `b` may be for the skinny kernel to
/// read them in place.
const MAX_ROW_GAP: usize = 1024;
/// The largest left operand (in elements) the skinny kernel copies with its rows spaced
/// out ([`rows_alias`]): each thread keeps its copy's buffer for the next product, so
/// this bounds what it holds (4 MiB; a recurrent step's `[64, 2048]` is 0.5 MiB).
const SPACED_ELEMS: usize = 1 << 20;
/// Products of fewer multiply-adds than this run on the calling thread alone.
const PARALLEL_MACS: usize = 1 << 20;

/// The backend computing matrix products in this process: `"openblas"` or
/// `"matrixmultiply"`.
pub fn backend() -> &'static str {
    if blas().is_some() {
        "openblas"
    } else {
        "matrixmultiply"
    }
}

/// The kernel family the loaded OpenBLAS runs on this CPU (its
/// `openblas_get_corename`: `"SkylakeX"`, `"Haswell"`, `"Zen"`, …), or `None` when
/// OpenBLAS does not compute the products.
pub fn openblas_core() -> Option<&'static str> {
    blas().map(|b| b.core.as_str())
}

/// The kernel family of an OpenBLAS that was found but passed over because its
/// kernels miss this CPU's vector units (a `"Prescott"`, without AVX2, on a CPU with
/// AVX2 or AVX-512): the products then run on the pure-Rust kernels, which use them.
/// [`name_cpu_for_openblas`] at the start of `main` avoids it; an `OPENBLAS_CORETYPE`
/// set by the user is kept whatever it names.
///
/// ```
/// use unrolled_autograd::gemm;
/// let a = ndarray::Array2::<f32>::ones((300, 300));
/// let mut c = ndarray::Array2::zeros((300, 300));
/// gemm::gemm(1.0, &a.view(), &a.view(), 0.0, &mut c.view_mut());
/// assert_eq!(c[[0, 0]], 300.0);
/// if gemm::openblas_passed_over().is_some() {
///     assert_eq!(gemm::backend(), "matrixmultiply");
///     assert_eq!(gemm::openblas_core(), None);
/// }
/// ```
pub fn openblas_passed_over() -> Option<&'static str> {
    passed_over()
}

/// Whether OpenBLAS's kernel family `family` (as its `openblas_get_corename` names
/// it) leaves out this CPU's vector units: a family without AVX2 (`"Prescott"`,
/// `"Core2"`, `"Sandybridge"`, …) on a CPU with AVX2 and FMA, or AVX-512.
///
/// ```
/// use unrolled_autograd::gemm;
/// assert!(!gemm::openblas_family_misses_cpu("SkylakeX"));
/// #[cfg(target_arch = "x86_64")]
/// if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
///     assert!(gemm::openblas_family_misses_cpu("Prescott"));
/// }
/// ```
pub fn openblas_family_misses_cpu(family: &str) -> bool {
    blas::misses(family, blas::cpu_core_type())
}

/// Names this CPU's kernels for an OpenBLAS too old to know it.
///
/// When the installed OpenBLAS would choose kernels without AVX2 on a CPU with AVX2
/// or AVX-512 (Debian 12's 0.3.21 takes an Emerald Rapids Xeon for a `Prescott`),
/// this sets `OPENBLAS_CORETYPE` to the family the CPU's features call for
/// (`"SkylakeX"` with AVX-512, `"Haswell"` with AVX2 and FMA) and returns it; the
/// engine then loads OpenBLAS with those kernels at its first product (and child
/// processes inherit the variable). Should the library still run the kernels it
/// chose (a build that ignores the variable), it is passed over
/// ([`openblas_passed_over`]). It does nothing and returns `None` when OpenBLAS is
/// absent or chooses well (the library it loaded is then kept for the products),
/// when `OPENBLAS_CORETYPE` is already set, under `UNROLLED_BLAS=off`, or once the
/// engine has loaded OpenBLAS (at its first product, or at a call to [`backend`],
/// [`openblas_core`] or [`openblas_passed_over`]).
///
/// # Safety
/// It sets an environment variable and loads (and may unload) OpenBLAS: call it
/// first thing in `main`, while no other thread runs.
///
/// ```
/// use unrolled_autograd::gemm;
/// // First thing in `main`:
/// // SAFETY: no other thread runs yet.
/// let named = unsafe { gemm::name_cpu_for_openblas() };
/// if let Some(family) = named {
///     println!("OpenBLAS is told to run its {family} kernels");
/// }
/// // Whatever OpenBLAS runs, it is not kernels that miss the CPU.
/// println!("{} ({:?})", gemm::backend(), gemm::openblas_core());
/// ```
pub unsafe fn name_cpu_for_openblas() -> Option<&'static str> {
    if blas::loaded() {
        return None;
    }
    // SAFETY: the caller runs no other thread.
    unsafe { blas::name_cpu() }
}

/// `c = alpha * a @ b + beta * c`. `a` is `[m, k]`, `b` is `[k, n]`, `c` is `[m, n]`;
/// transposed operands are passed as transposed views (`x.t()`), never copied.
///
/// # Panics
/// When the shapes do not agree (callers check them first, as every op's `infer` does).
pub fn gemm<T: Float>(alpha: T, a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, beta: T, c: &mut ArrayViewMut2<'_, T>) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2 && c.dim() == (m, n), "gemm shapes [{m}, {k}] @ [{k2}, {n}] -> {:?}", c.dim());
    if m == 0 || n == 0 || k == 0 {
        general_mat_mul(alpha, a, b, beta, c);
        return;
    }
    if goes_skinny(a, b, c) {
        let src = Src::Rows { ptr: b.as_ptr().cast(), ld: b.strides()[0] };
        run_skinny(alpha, a, src, beta, c);
        return;
    }
    if blas().is_some() {
        split_blas(alpha, a, b, beta, c);
        return;
    }
    general_mat_mul(alpha, a, b, beta, c);
}

/// Whether [`gemm`] computes `a @ b` into `c` with the skinny kernel, reading the rows
/// of `b` in place: while they are close enough together (farther apart, the rows a
/// tile reads fall into a few cache sets and evict each other).
fn goes_skinny<T: Float>(a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, c: &ArrayViewMut2<'_, T>) -> bool {
    let n = b.dim().1;
    skinny_fits::<T>(a.dim().0, c) && (n == 1 || b.strides()[1] == 1) && b.strides()[0].unsigned_abs() <= MAX_ROW_GAP
}

/// Two products of one shape, `c1 = alpha * a1 @ b1 + beta * c1` and the same for
/// `c2`: the same values as two calls of [`gemm`]. Large products through OpenBLAS run
/// one per thread, each whole, rather than each split over the threads in turn: a
/// weight's gradients over a sequence, `[T·B, 4H]ᵀ·[T·B, I]` and `[T·B, 4H]ᵀ·[T·B, H]`,
/// hand over once, and the threads read the shared `[T·B, 4H]` together. On an
/// Emerald Rapids Xeon with two threads and the operands in the cache, W1-L's pair
/// (`[2048, 6400]·[6400, 512]`, twice) took 90.8 ms instead of 94.5, W2-L's 23.7
/// instead of 25.6 (medians of 21, alternating in one process); in the step (see
/// `graph::products`), W2-L took 1.8 ms less.
pub(crate) fn gemm_pair<'a, 'c, T: Float>(alpha: T, beta: T, first: Product<'a, 'c, T>, second: Product<'a, 'c, T>) {
    let same = first.a.dim() == second.a.dim() && first.b.dim() == second.b.dim() && first.c.dim() == second.c.dim();
    let (m, k) = first.a.dim();
    let n = first.c.dim().1;
    let apart = same
        && threads() >= 2
        && blas().is_some()
        && m * n * k >= 4 * PARALLEL_MACS
        && [&first, &second].iter().all(|p| p.fits() && !goes_skinny(&p.a, &p.b, &p.c));
    if !apart {
        for mut p in [first, second] {
            gemm(alpha, &p.a, &p.b, beta, &mut p.c);
        }
        return;
    }
    run_apart(alpha, beta, first, second);
}

/// [`gemm_pair`]'s products, one per thread (with OpenBLAS, single-threaded in each).
fn run_apart<'a, 'c, T: Float>(alpha: T, beta: T, first: Product<'a, 'c, T>, second: Product<'a, 'c, T>) {
    let both = [Mutex::new(first), Mutex::new(second)];
    pool::run(2, &|share, of| {
        for p in both.iter().skip(share).step_by(of) {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            let Product { a, b, c } = &mut *p;
            if !blas().is_some_and(|bl| blas_call(bl, alpha, a, b, beta, c)) {
                general_mat_mul(alpha, a, b, beta, c);
            }
        }
    });
}

/// One of the products [`gemm_pair`] computes: `c` from `a @ b`.
pub(crate) struct Product<'a, 'c, T> {
    /// The left operand, `[m, k]`.
    pub a: ArrayView2<'a, T>,
    /// The right operand, `[k, n]`.
    pub b: ArrayView2<'a, T>,
    /// The output, `[m, n]`.
    pub c: ArrayViewMut2<'c, T>,
}

impl<T> Product<'_, '_, T> {
    /// Whether the shapes agree.
    fn fits(&self) -> bool {
        let ((m, k), (k2, n)) = (self.a.dim(), self.b.dim());
        k == k2 && self.c.dim() == (m, n) && m > 0 && n > 0 && k > 0
    }
}

/// Whether the skinny kernel computes an `[m, n]` product into `c` for element type `T`.
fn skinny_fits<T: Float>(m: usize, c: &ArrayViewMut2<'_, T>) -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
        && m <= SKINNY_ROWS
        && (c.dim().1 == 1 || c.strides()[1] == 1)
        && crate::simd::has_avx512()
}

/// Whether a product `a @ b` with `m` rows can read `b` from a [`Packed`] copy: an
/// `f32` product for the skinny kernel. Packing pays when the copy is reused (a
/// weight read by every step of a replay): the kernel then reads `b` as contiguous
/// panels, whether the weight is used transposed or not.
pub(crate) fn wants_packed<T: Float>(m: usize, b: &ArrayView2<'_, T>) -> bool {
    let (k, n) = b.dim();
    TypeId::of::<T>() == TypeId::of::<f32>() && m > 0 && k > 0 && n > 1 && m <= SKINNY_ROWS && crate::simd::has_avx512()
}

/// Packs `b` for [`gemm_packed`] (`None` unless `T` is `f32`).
pub(crate) fn pack<T: Float>(b: &ArrayView2<'_, T>) -> Option<Packed> {
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| Packed::new(b))
}

/// `c = alpha * a @ b + beta * c` with `b` packed by [`pack`]. Returns `false`, having
/// done nothing, when the product does not fit the skinny kernel ([`wants_packed`]).
pub(crate) fn gemm_packed<T: Float>(
    alpha: T,
    a: &ArrayView2<'_, T>,
    b: &Packed,
    beta: T,
    c: &mut ArrayViewMut2<'_, T>,
) -> bool {
    let (m, k) = a.dim();
    if m == 0 || k == 0 || b.dim() != (k, c.dim().1) || c.dim().0 != m || !skinny_fits::<T>(m, c) {
        return false;
    }
    run_skinny(alpha, a, Src::Packed(b), beta, c);
    true
}

fn run_skinny<T: Float>(alpha: T, a: &ArrayView2<'_, T>, b: Src<'_>, beta: T, c: &mut ArrayViewMut2<'_, T>) {
    let ((m, k), n) = (a.dim(), c.dim().1);
    let job = Job {
        m,
        n,
        k,
        alpha: alpha.f64() as f32,
        a: a.as_ptr().cast(),
        sa: (a.strides()[0], a.strides()[1]),
        b,
        beta: beta.f64() as f32,
        c: c.as_mut_ptr().cast(),
        ldc: c.strides()[0],
        upcoming: take_upcoming(),
    };
    let panels = job.panels();
    let shares = if m * n * k >= PARALLEL_MACS { panels } else { 1 };
    let spaced = m * k <= SPACED_ELEMS && rows_alias(m, job.sa, alias_limit(l1_ways()));
    if shares > 1 && splits_rows(m, k, n) {
        pool::run(threads(), &|share, of| {
            // SAFETY: as below; the shares write disjoint row ranges of `c`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                rows_share(&job, share, of, spaced)
            };
        });
        return;
    }
    pool::run(shares, &|share, of| {
        let range = panels * share / of..panels * (share + 1) / of;
        // SAFETY: `skinny_fits` checked the element type and AVX-512; the pointers
        // and strides come from views of the shapes checked by the caller, and the
        // shares write disjoint column ranges of `c`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if spaced {
                job.spaced(range)
            } else {
                job.run(range)
            }
        };
    });
}

/// Whether the threads of a skinny product split its rows rather than its output's
/// columns: when each thread's rows fill at least two of the kernel's tiles and the
/// whole of `b` fits in half of a core's L2 cache. Each thread then reads only the rows
/// of `a` that its share of the row-split kernel before it wrote (an Elman step's
/// activation, or its gradient), writes the rows that its share of the kernel after it
/// reads, and keeps all of the weight in its L2 from one step to the next. Split by
/// columns, each thread reads half of `a` from the other core's cache, and half of
/// what it writes is read there. On an Emerald Rapids Xeon (2 MiB of L2 per core) with
/// two threads, W2-L's step (`[64, 512]·[512, 512]` products, a 1 MiB weight) took
/// 1.0–1.6 ms less in three alternations of 21 replays; larger weights (W1-L's 4 MiB)
/// were slower split by rows, and 32 rows (W4's) make tiles too short.
fn splits_rows(m: usize, k: usize, n: usize) -> bool {
    let t = threads();
    t > 1 && m >= 2 * skinny::MR * t && k * n * std::mem::size_of::<f32>() <= l2_bytes() / 2
}

/// Share `share` of `of` of `job` split by rows ([`splits_rows`]): its rows of the
/// output, every column, read from a spaced copy when `spaced`; its share of the
/// memory the kernel after the product reads is asked for as that kernel splits its
/// rows (the first rows for the first share).
///
/// # Safety
/// As [`Job::run`] (and [`Job::spaced`] when `spaced`).
#[cfg(target_arch = "x86_64")]
unsafe fn rows_share(job: &Job<'_>, share: usize, of: usize, spaced: bool) {
    let (r0, r1) = (job.m * share / of, job.m * (share + 1) / of);
    if r0 == r1 {
        return;
    }
    let sub = Job {
        m: r1 - r0,
        a: job.a.wrapping_offset(r0 as isize * job.sa.0),
        c: job.c.wrapping_offset(r0 as isize * job.ldc),
        upcoming: job.upcoming.part(share, of),
        ..*job
    };
    if spaced {
        sub.spaced(0..sub.panels())
    } else {
        sub.run(0..sub.panels())
    }
}

/// Whether the rows of a row-major left operand (`m` rows `sa.0` elements apart) that
/// one tile of the skinny kernel reads at once fall into few sets of the L1 cache:
/// more of a tile's twelve than `limit` in one set ([`alias_limit`]). With a row
/// stride of a multiple of 4 KiB (a `[B, 1024]` or `[B, 2048]` step gradient) every
/// row maps to the same set. The L1 caches of the CPUs with AVX-512 have 64 sets of
/// 64-byte lines (a 4 KiB period).
fn rows_alias(m: usize, sa: (isize, isize), limit: usize) -> bool {
    if sa.1 != 1 || m < 8 {
        return false;
    }
    let bytes = sa.0.unsigned_abs() * std::mem::size_of::<f32>();
    let mut per_set = [0usize; 64];
    for r in 0..m.min(skinny::MR) {
        per_set[(r * bytes / 64) % 64] += 1;
    }
    per_set.iter().any(|&n| n > limit)
}

/// The most of a tile's rows one set of an L1 cache of `ways` ways holds before the
/// rows are read from a spaced copy instead ([`rows_alias`]). In an L1 with fewer ways
/// than a tile has rows (AMD Zen 4's 8) the rows evict each other while the tile
/// broadcasts from them: in a probe on the Zen 4 with its operands in the cache, a
/// step's `[64, 2048]·[2048, 512]` took 9–14% longer than with rows a line further
/// apart, and W4's `[32, 1024]·[1024, 256]` 15–85% longer; there, more than
/// [`skinny::SPREAD`] rows in a set take the copy. An L1 of 12 ways (Intel's since
/// Ice Lake) holds a tile's twelve: on an Emerald Rapids Xeon the copy cost more than
/// it saved, and the steps of W1-L, W3-L and an LSTM of W4's sizes took 1–2% less time
/// reading the rows in place (alternating per replay in one process).
fn alias_limit(ways: usize) -> usize {
    if ways < skinny::MR {
        skinny::SPREAD
    } else {
        ways
    }
}

/// The bytes of one core's L2 cache, as Linux reports them; 1 MiB (AMD Zen 4's, the
/// least among the CPUs with AVX-512 since Ice Lake) when it does not.
fn l2_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| l2_bytes_in(Path::new("/sys/devices/system/cpu/cpu0/cache")).unwrap_or(1 << 20))
}

/// The size of the level-2 cache among the `index*` entries of `dir` (sysfs's cache
/// description: `2048K`).
fn l2_bytes_in(dir: &Path) -> Option<usize> {
    cache_entry(dir, |read| {
        if read("level")?.trim() != "2" || read("type")?.trim() == "Instruction" {
            return None;
        }
        let size = read("size")?;
        let size = size.trim();
        let (digits, unit) = match size.strip_suffix(['K', 'M']) {
            Some(d) => (d, if size.ends_with('K') { 1 << 10 } else { 1 << 20 }),
            None => (size, 1),
        };
        digits.parse::<usize>().ok().map(|v| v * unit).filter(|&b| b > 0)
    })
}

/// The first value `f` finds among the `index*` entries of `dir` (sysfs's cache
/// description), given a reader of the entry's files.
fn cache_entry<R>(dir: &Path, f: impl Fn(&dyn Fn(&str) -> Option<String>) -> Option<R>) -> Option<R> {
    (0..16).find_map(|i| {
        let entry = dir.join(format!("index{i}"));
        f(&|name: &str| std::fs::read_to_string(entry.join(name)).ok())
    })
}

/// The ways of this CPU's L1 data cache, as Linux reports them; 8 (the fewest among
/// the CPUs with AVX-512) when it does not.
fn l1_ways() -> usize {
    static WAYS: OnceLock<usize> = OnceLock::new();
    *WAYS.get_or_init(|| l1_ways_in(Path::new("/sys/devices/system/cpu/cpu0/cache")).unwrap_or(8))
}

/// The ways of the level-1 data cache among the `index*` entries of `dir` (sysfs's
/// cache description).
fn l1_ways_in(dir: &Path) -> Option<usize> {
    cache_entry(dir, |read| {
        if read("level")?.trim() != "1" || read("type")?.trim() != "Data" {
            return None;
        }
        read("ways_of_associativity")?.trim().parse().ok().filter(|&w: &usize| w > 0)
    })
}

/// A product through OpenBLAS, split over the workers when it is large: along the
/// longer of the output's two sides, each share one single-threaded call.
fn split_blas<T: Float>(alpha: T, a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, beta: T, c: &mut ArrayViewMut2<'_, T>) {
    let (m, n) = c.dim();
    let k = a.dim().1;
    let shares = if m * n * k >= 4 * PARALLEL_MACS { threads() } else { 1 };
    let along_rows = m >= n;
    let len = if along_rows { m } else { n };
    let shares = shares.min(len.div_ceil(64)).max(1);
    let one = |a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, c: &mut ArrayViewMut2<'_, T>| {
        if !blas().is_some_and(|bl| blas_call(bl, alpha, a, b, beta, c)) {
            general_mat_mul(alpha, a, b, beta, c);
        }
    };
    if shares == 1 {
        one(a, b, c);
        return;
    }
    // Cut points on multiples of 16, so each share's block starts aligned.
    let cut = |s: usize| if s == shares { len } else { (len * s / shares) / 16 * 16 };
    let mut parts = Vec::with_capacity(shares);
    let mut rest = c.view_mut();
    let mut at = 0;
    for s in 1..=shares {
        let end = cut(s);
        let (head, tail) = rest.split_at(if along_rows { Axis(0) } else { Axis(1) }, end - at);
        parts.push(Mutex::new(head));
        rest = tail;
        at = end;
    }
    pool::run(shares, &|share, of| {
        for s in (share..shares).step_by(of) {
            let mut part = parts[s].lock().unwrap_or_else(|e| e.into_inner());
            let (lo, hi) = (cut(s), cut(s + 1));
            if along_rows {
                one(&a.slice(s![lo..hi, ..]), b, &mut part);
            } else {
                one(a, &b.slice(s![.., lo..hi]), &mut part);
            }
        }
    });
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

    fn rand32(r: usize, c: usize, seed: u64) -> Array2<f32> {
        rand(r, c, seed).mapv(|v| v as f32)
    }

    /// The product in f64 from f32 operands, and a bound on f32 rounding for it.
    fn reference(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> (Array2<f64>, f64) {
        let (a, b) = (a.mapv(f64::from), b.mapv(f64::from));
        let tol = 1e-6 * a.ncols() as f64;
        (a.dot(&b), tol)
    }

    #[test]
    fn skinny_products_agree_with_f64_on_every_edge() {
        // Every tile height (1 to 12, as `skinny::tile_rows` splits the rows) and an
        // inner dimension past the kernel's block (2,048), for a few shapes only (the
        // reference is slow).
        let ks = [1, 3, 4, 7, 513, 1030, 4100];
        for &m in &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 24, 31, 64, 128] {
            for &n in &[1, 5, 16, 17, 31, 32, 33, 70] {
                for &k in ks.iter().filter(|&&k| k < 2048 || (n == 33 && m % 4 == 1)) {
                    for ta in [false, true] {
                        let a0 = if ta { rand32(k, m, 1) } else { rand32(m, k, 1) };
                        let a = if ta { a0.t() } else { a0.view() };
                        let b = rand32(k, n, 2);
                        let (want, tol) = reference(&a, &b.view());
                        // beta = 0 never reads `c`: NaN there must not leak.
                        let mut c = Array2::from_elem((m, n), f32::NAN);
                        gemm(1.0f32, &a, &b.view(), 0.0, &mut c.view_mut());
                        let bt = b.t().to_owned();
                        let packed = pack(&bt.t()).expect("f32");
                        let mut cp = rand32(m, n, 3);
                        let c0 = cp.mapv(f64::from);
                        let used = gemm_packed(0.5f32, &a, &packed, 2.0, &mut cp.view_mut());
                        assert_eq!(used, crate::simd::has_avx512() && m <= SKINNY_ROWS);
                        for ((x, y), (p, z)) in c.iter().zip(&want).zip(cp.iter().zip(&c0)) {
                            assert!((f64::from(*x) - y).abs() < tol, "{m}x{k}x{n} ta={ta}: {x} vs {y}");
                            if used {
                                let e = 0.5 * y + 2.0 * z;
                                assert!((f64::from(*p) - e).abs() < tol, "packed {m}x{k}x{n} ta={ta}: {p} vs {e}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rows_a_multiple_of_4_kib_apart_are_read_from_a_spaced_copy_in_a_small_l1() {
        // An L1 of 8 ways takes the copy past six rows in a set (as before the ways
        // were read), one of 12 ways past twelve: never, for a tile of twelve rows.
        let (small, large) = (alias_limit(8), alias_limit(12));
        assert_eq!((small, large, alias_limit(4)), (6, 12, 6));
        // f32 rows of 1,024 or 2,048 elements all fall into one set of the L1 cache.
        for m in [8, 9, 12, 64] {
            assert!(rows_alias(m, (1024, 1), small) && rows_alias(m, (-2048, 1), small), "{m} rows");
            assert!(!rows_alias(m, (1024, 1), large) && !rows_alias(m, (2048, 1), large), "{m} rows");
        }
        // Rows 2 KiB apart share a set six at a time, and transposed or short operands
        // are read as they are.
        assert!(!rows_alias(64, (512, 1), small) && !rows_alias(64, (1040, 1), small));
        assert!(!rows_alias(64, (1, 1024), small) && !rows_alias(4, (1024, 1), small));
        assert!(rows_alias(64, (512, 1), 5));
        // The copy's row length: 1,024 and 2,048 get a line more, 1,008 (4,032 bytes,
        // a line short of 4 KiB) is spread already.
        assert!(!rows_alias(64, (1008, 1), skinny::SPREAD) && !rows_alias(64, (2064, 1), skinny::SPREAD));
    }

    /// A directory of sysfs-like cache entries named `name`, emptied, and a writer of
    /// entry `i`'s level, type, and the file `last` names.
    fn cache_dir(name: &str, last: &'static str) -> (std::path::PathBuf, impl Fn(usize, &str, &str, &str)) {
        let dir = std::env::temp_dir().join(format!("unrolled-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // left by an earlier run
        let d = dir.clone();
        let entry = move |i: usize, level: &str, kind: &str, value: &str| {
            let e = d.join(format!("index{i}"));
            std::fs::create_dir_all(&e).expect("temp dir");
            for (f, v) in [("level", level), ("type", kind), (last, value)] {
                std::fs::write(e.join(f), format!("{v}\n")).expect("temp file");
            }
        };
        (dir, entry)
    }

    #[test]
    fn the_l1_ways_are_read_from_the_data_cache_entry() {
        let (dir, entry) = cache_dir("l1", "ways_of_associativity");
        assert_eq!(l1_ways_in(&dir), None);
        entry(0, "1", "Instruction", "8");
        entry(1, "1", "Data", "12");
        entry(2, "2", "Unified", "16");
        assert_eq!(l1_ways_in(&dir), Some(12));
        entry(1, "1", "Data", "0");
        assert_eq!(l1_ways_in(&dir), None);
        std::fs::remove_dir_all(&dir).expect("temp dir");
    }

    #[test]
    fn the_l2_size_is_read_from_the_level_2_entry() {
        let (dir, entry) = cache_dir("l2", "size");
        assert_eq!(l2_bytes_in(&dir), None);
        entry(0, "1", "Data", "48K");
        entry(1, "2", "Unified", "2048K");
        assert_eq!(l2_bytes_in(&dir), Some(2 << 20));
        entry(1, "2", "Unified", "1M");
        assert_eq!(l2_bytes_in(&dir), Some(1 << 20));
        entry(1, "2", "Unified", "0K");
        assert_eq!(l2_bytes_in(&dir), None);
        std::fs::remove_dir_all(&dir).expect("temp dir");
    }

    /// A product split by rows gives the bits of the same product over every row at once,
    /// in shares of a few rows or of none, read in place or from a spaced copy.
    #[test]
    fn shares_of_rows_give_the_product_of_all_rows() {
        if !crate::simd::has_avx512() {
            return;
        }
        for (m, k, n) in [(64, 512, 96), (13, 70, 33), (50, 1024, 40)] {
            let (a, w) = (rand32(m, k, 1), rand32(n, k, 2));
            let packed = pack(&w.t()).expect("f32");
            let mut whole = Array2::<f32>::zeros((m, n));
            let job = Job {
                m,
                n,
                k,
                alpha: 1.0,
                a: a.as_ptr(),
                sa: (k as isize, 1),
                b: Src::Packed(&packed),
                beta: 0.0,
                c: whole.as_mut_ptr(),
                ldc: n as isize,
                upcoming: Upcoming::default(),
            };
            // SAFETY: AVX-512 is there; the pointers address the arrays above.
            unsafe { job.run(0..job.panels()) };
            for (of, spaced) in [(2, false), (3, true), (m + 2, false)] {
                let mut split = Array2::from_elem((m, n), f32::NAN);
                let job = Job { c: split.as_mut_ptr(), ..job };
                for share in 0..of {
                    // SAFETY: as above; `a`'s rows are contiguous.
                    unsafe { rows_share(&job, share, of, spaced) };
                }
                assert_eq!(split, whole, "{m}x{k}x{n} in {of} shares");
            }
        }
        // Shares of rows only where each thread's rows fill two tiles and the weight
        // fits in half an L2 cache.
        if threads() > 1 {
            let rows = 2 * skinny::MR * threads();
            assert!(splits_rows(rows, 8, 8) && !splits_rows(rows - 1, 8, 8));
            assert!(!splits_rows(rows, l2_bytes() / 8, 2) && splits_rows(rows, l2_bytes() / 8, 1));
        }
    }

    #[test]
    fn a_product_split_over_threads_equals_the_one_thread_result() {
        // k = 1,024: the rows of `a` are 4 KiB apart, so in an L1 of 8 ways the shares
        // read spaced copies.
        for (m, k, n) in [(64, 512, 96), (64, 1024, 96), (13, 2048, 40)] {
            one_thread_and_split_agree(m, k, n);
        }
    }

    fn one_thread_and_split_agree(m: usize, k: usize, n: usize) {
        let (a, b) = (rand32(m, k, 7), rand32(k, n, 8));
        let mut c = Array2::<f32>::zeros((m, n));
        gemm(1.0f32, &a.view(), &b.view(), 0.0, &mut c.view_mut());
        if crate::simd::has_avx512() {
            // The same kernel over all panels on this thread alone: bit for bit the same.
            let mut one = Array2::<f32>::zeros((m, n));
            let job = Job {
                m,
                n,
                k,
                alpha: 1.0,
                a: a.as_ptr(),
                sa: (k as isize, 1),
                b: Src::Rows { ptr: b.as_ptr(), ld: n as isize },
                beta: 0.0,
                c: one.as_mut_ptr(),
                ldc: n as isize,
                upcoming: Upcoming::default(),
            };
            // SAFETY: AVX-512 is there; the pointers address the arrays above.
            unsafe { job.run(0..job.panels()) };
            assert_eq!(c, one);
            // Read from a copy with its rows spaced out, whatever this CPU's L1 has
            // the product take: the same bits again.
            let mut spaced = Array2::<f32>::zeros((m, n));
            let job = Job { c: spaced.as_mut_ptr(), ..job };
            // SAFETY: as above, and `a`'s rows are contiguous.
            unsafe { job.spaced(0..job.panels()) };
            assert_eq!(spaced, one);
            // Asking the cache for other memory, mapped or not, changes nothing.
            let mut up = Upcoming::default();
            up.push(b.as_ptr() as usize + 4, k * n * 4 - 4);
            up.push(64, 1 << 20);
            up.push(usize::MAX - (1 << 16), 1 << 12);
            upcoming(up);
            let mut fetched = Array2::<f32>::zeros((m, n));
            gemm(1.0f32, &a.view(), &b.view(), 0.0, &mut fetched.view_mut());
            assert_eq!(fetched, one);
            assert!(take_upcoming().is_empty(), "taken by the product");
        }
        let (want, tol) = reference(&a.view(), &b.view());
        assert!(c.iter().zip(&want).all(|(x, y)| (f64::from(*x) - y).abs() < tol));
    }

    #[test]
    fn large_products_split_over_threads_agree_with_the_fallback() {
        for (m, k, n) in [(300, 100, 200), (150, 100, 400), (700, 40, 150)] {
            let (a, b, c0) = (rand(m, k, 9), rand(n, k, 10), rand(m, n, 11));
            let (mut c1, mut c2) = (c0.clone(), c0.clone());
            gemm(0.5, &a.view(), &b.t(), 2.0, &mut c1.view_mut());
            gemm_fallback(0.5, &a.view(), &b.t(), 2.0, &mut c2.view_mut());
            assert!(c1.iter().zip(&c2).all(|(x, y)| (x - y).abs() < 1e-12), "{m}x{k}x{n}");
        }
    }

    /// Two products computed together, each on its own thread when they are large,
    /// give the values of two calls of `gemm`, bit for bit, in both precisions; with
    /// shapes that differ (computed one after the other) too.
    #[test]
    fn pairs_of_products_give_the_values_of_one_at_a_time() {
        fn check<T: Float + std::fmt::Debug>(cast: impl Fn(f64) -> T) {
            for (m, k, n, m2) in [(256, 300, 72, 256), (200, 30, 20, 200), (256, 300, 72, 192)] {
                let (g, x, h) = (rand(k, m, 1).mapv(&cast), rand(k, n, 2).mapv(&cast), rand(k, n, 3).mapv(&cast));
                let g2 = g.slice(s![.., ..m2]);
                let c0 = rand(m, n, 4).mapv(&cast);
                let (mut c1, mut c2) = (c0.clone(), c0.slice(s![..m2, ..]).to_owned());
                let (mut w1, mut w2) = (c1.clone(), c2.clone());
                let (alpha, beta) = (cast(0.5), cast(2.0));
                let first = Product { a: g.t(), b: x.view(), c: c1.view_mut() };
                gemm_pair(alpha, beta, first, Product { a: g2.t(), b: h.view(), c: c2.view_mut() });
                gemm(alpha, &g.t(), &x.view(), beta, &mut w1.view_mut());
                gemm(alpha, &g2.t(), &h.view(), beta, &mut w2.view_mut());
                assert_eq!(c1, w1, "{m}x{k}x{n}");
                assert_eq!(c2, w2, "{m2}x{k}x{n}");
                // One per thread, whatever the backend and sizes.
                let (mut c1, mut c2) = (c0.clone(), c0.slice(s![..m2, ..]).to_owned());
                let first = Product { a: g.t(), b: x.view(), c: c1.view_mut() };
                run_apart(alpha, beta, first, Product { a: g2.t(), b: h.view(), c: c2.view_mut() });
                assert_eq!((c1, c2), (w1, w2), "{m}x{k}x{n}, {m2} rows, one per thread");
            }
        }
        check::<f64>(|v| v);
        check::<f32>(|v| v as f32);
    }
}
