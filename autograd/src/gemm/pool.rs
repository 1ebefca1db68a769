//! The workers that split one matrix product across the machine's cores.
//!
//! A recurrent step's products are small (a fraction of a millisecond), so handing
//! work over must cost microseconds: each worker spins for a while after its last
//! job before it parks, and the caller runs one share itself. One caller at a time
//! uses the workers; a second caller running at the same moment (another thread
//! of the process) computes its product alone instead of waiting.
//!
//! The number of threads is `UNROLLED_NUM_THREADS`, else `OPENBLAS_NUM_THREADS`,
//! else the number of cores the process may use.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// A share of a job: called as `f(share, shares)` for every `share` in `0..shares`.
type Job = dyn Fn(usize, usize) + Sync;

/// How long an idle worker spins before it parks: longer than the gap between two
/// steps' products, far shorter than anything a user would notice.
const SPIN: Duration = Duration::from_micros(1000);

struct Slot {
    epoch: AtomicU64,
    sleeping: AtomicBool,
    /// The current job, valid while the caller waits for it (set before `epoch` moves).
    job: UnsafeCell<Option<*const Job>>,
    thread: OnceLock<Thread>,
}

// SAFETY: `job` is written only by the one caller holding `Pool::busy`, before it
// publishes the new epoch (release), and read by the worker after it sees that epoch
// (acquire); the caller waits for the worker to finish before the job goes away.
unsafe impl Sync for Slot {}

struct Pool {
    slots: Vec<&'static Slot>,
    pending: &'static AtomicUsize,
    panicked: &'static AtomicBool,
    busy: Mutex<()>,
}

/// How many threads share a product (1: the caller alone).
pub fn threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let from = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n > 0);
        from("UNROLLED_NUM_THREADS")
            .or_else(|| from("OPENBLAS_NUM_THREADS"))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .min(64)
    })
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pending: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let panicked: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let mut slots = Vec::new();
        for w in 1..threads() {
            let slot: &'static Slot = Box::leak(Box::new(Slot {
                epoch: AtomicU64::new(0),
                sleeping: AtomicBool::new(false),
                job: UnsafeCell::new(None),
                thread: OnceLock::new(),
            }));
            let spawned = std::thread::Builder::new()
                .name(format!("unrolled-gemm-{w}"))
                .spawn(move || work(slot, w, pending, panicked));
            match spawned {
                Ok(h) => {
                    let _ = slot.thread.set(h.thread().clone());
                    slots.push(slot);
                }
                Err(_) => break,
            }
        }
        Pool { slots, pending, panicked, busy: Mutex::new(()) }
    })
}

fn work(slot: &'static Slot, share: usize, pending: &AtomicUsize, panicked: &AtomicBool) {
    let mut seen = 0;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = slot.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(128) && since.elapsed() > SPIN {
                slot.sleeping.store(true, Ordering::SeqCst);
                if slot.epoch.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                slot.sleeping.store(false, Ordering::SeqCst);
                since = Instant::now();
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: see `Slot`: the job is alive until `pending` reaches zero.
        let job = unsafe { (*slot.job.get()).expect("a job is set before its epoch") };
        let shares = unsafe { &*job };
        let total = shares_of(slot);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shares(share, total))).is_err() {
            panicked.store(true, Ordering::SeqCst);
        }
        pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The number of shares of the current job (the workers taking part plus the caller),
/// stored in the epoch's low bits.
fn shares_of(slot: &Slot) -> usize {
    (slot.epoch.load(Ordering::Acquire) & 0xff) as usize
}

/// Runs `f(share, shares)` for every share, the caller taking share 0, and returns
/// when all are done. `shares` is at most [`threads`] and at most `max_shares`.
pub fn run(max_shares: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    let p = pool();
    let want = max_shares.min(p.slots.len() + 1);
    let guard = if want > 1 { p.busy.try_lock().ok() } else { None };
    let Some(_guard) = guard else {
        f(0, 1);
        return;
    };
    let shares = want;
    // SAFETY: the job outlives its use: this function waits below until every worker
    // taking part has finished it.
    let job: *const Job = unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Job>(f) };
    p.pending.store(shares - 1, Ordering::SeqCst);
    for slot in &p.slots[..shares - 1] {
        // SAFETY: see `Slot`.
        unsafe { *slot.job.get() = Some(job) };
        let e = slot.epoch.load(Ordering::Relaxed);
        let next = ((e >> 8) + 1) << 8 | shares as u64;
        slot.epoch.store(next, Ordering::SeqCst);
        if slot.sleeping.load(Ordering::SeqCst) {
            if let Some(t) = slot.thread.get() {
                t.unpark();
            }
        }
    }
    let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0, shares)));
    while p.pending.load(Ordering::Acquire) != 0 {
        std::hint::spin_loop();
    }
    if let Err(e) = mine {
        std::panic::resume_unwind(e);
    }
    if p.panicked.swap(false, Ordering::SeqCst) {
        panic!("a matrix-product worker panicked");
    }
}

/// Elementwise passes over fewer elements than this run on the calling thread alone.
const PARALLEL_ELEMS: usize = 1 << 14;

/// Runs `f(first_row, block)` over disjoint blocks of whole rows of `out` (rows of
/// `row_len` elements), one block per thread when `out` is large enough to pay for
/// the hand-over, else the whole of `out` on the calling thread. For kernels whose
/// rows are independent: the values do not depend on the split.
pub(crate) fn for_rows<T: Send>(out: &mut [T], row_len: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    for_rows_of(out, row_len, out.len(), f);
}

/// [`for_rows`] for a pass whose cost is `work` elements rather than `out.len()`: a
/// reduction writes few elements but reads many (a bias gradient's column sums).
pub(crate) fn for_rows_of<T: Send>(out: &mut [T], row_len: usize, work: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    for_row_blocks(out, row_len, work, 1, f);
}

/// The rows in each block [`for_rows_of`] hands out over `rows` rows for `work`
/// elements, every block but the last a whole number of `align` rows (`rows` when
/// the calling thread takes them all).
pub(crate) fn rows_per_share(rows: usize, work: usize, align: usize) -> usize {
    let shares = if work >= PARALLEL_ELEMS { threads().min(rows.div_ceil(align.max(1))) } else { 1 };
    if shares <= 1 {
        return rows;
    }
    rows.div_ceil(shares).next_multiple_of(align.max(1))
}

/// [`for_rows_of`] with every block but the last a whole number of `align` rows (a
/// kernel that sums its rows in blocks of `align` rows, each block within one share).
pub(crate) fn for_row_blocks<T: Send>(
    out: &mut [T],
    row_len: usize,
    work: usize,
    align: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let rows = out.len() / row_len.max(1);
    let per = rows_per_share(rows, work, align);
    if per >= rows {
        f(0, out);
        return;
    }
    let parts: Vec<Mutex<(usize, &mut [T])>> =
        out.chunks_mut(per * row_len).enumerate().map(|(i, c)| Mutex::new((i * per, c))).collect();
    run(parts.len(), &|share, of| {
        for part in parts.iter().skip(share).step_by(of) {
            let mut p = part.lock().unwrap_or_else(|e| e.into_inner());
            let (first, ref mut block) = *p;
            f(first, block);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_blocks_cover_every_row_once() {
        for rows in [1, 2, 3, 7, 64, 1000] {
            let mut out = vec![0usize; rows * 33];
            for_rows(&mut out, 33, &|first, block: &mut [usize]| {
                for (r, row) in block.chunks_mut(33).enumerate() {
                    row.iter_mut().for_each(|x| *x += first + r + 1);
                }
            });
            for (r, row) in out.chunks(33).enumerate() {
                assert!(row.iter().all(|&x| x == r + 1), "{rows} rows: row {r}");
            }
        }
    }

    #[test]
    fn every_share_runs_once() {
        for _ in 0..200 {
            let hits: Vec<AtomicUsize> = (0..8).map(|_| AtomicUsize::new(0)).collect();
            let total = AtomicUsize::new(0);
            run(8, &|share, shares| {
                hits[share].fetch_add(1, Ordering::SeqCst);
                total.store(shares, Ordering::SeqCst);
            });
            let shares = total.load(Ordering::SeqCst);
            assert!((1..=threads().min(8)).contains(&shares));
            for (i, h) in hits.iter().enumerate() {
                assert_eq!(h.load(Ordering::SeqCst), usize::from(i < shares), "share {i} of {shares}");
            }
        }
    }

    #[test]
    fn callers_on_several_threads_all_finish() {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        let (ran, of) = (AtomicUsize::new(0), AtomicUsize::new(0));
                        run(4, &|_, shares| {
                            ran.fetch_add(1, Ordering::SeqCst);
                            of.store(shares, Ordering::SeqCst);
                        });
                        assert_eq!(ran.load(Ordering::SeqCst), of.load(Ordering::SeqCst));
                    }
                });
            }
        });
    }
}
