//! An AVX-512 `f32` kernel for products with few rows: a recurrent step's
//! `[B, H] @ [H, 4H]` (and its gradient `[B, 4H] @ [4H, H]`), where `B` is a batch
//! of tens of rows and a general BLAS spends much of its time packing the weight.
//!
//! Each tile of the output, up to 12×32, is accumulated in up to 24 of the 32 vector registers
//! over the whole inner dimension (in blocks of [`KC`]), reading the rows of `a` by
//! broadcasts and 32 columns of `b` per step. `b` is read either as rows with unit
//! stride (a weight used untransposed) or from [`Packed`] panels: a transposed
//! weight packed once and reused by every step of a replay. Rows of `a` a multiple
//! of 4 KiB apart are read from a copy with its rows spaced out (`Job::spaced`) when
//! the L1 cache has fewer ways than a tile has rows.
//! Threads split the output's columns, and every output element is summed in the same order however
//! the work is split, so results do not depend on the number of threads.
//!
//! While a product runs, its tiles can also ask the L2 cache for memory the next kernel
//! will read ([`Upcoming`]): a recurrent step's product keeps the multiply-add units
//! busy and leaves the memory system idle, while the fused cell after it waits on
//! memory (its step's slice of the input projection, the step's output and gate
//! gradients in the reverse sweep).

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::packed::Packed;

/// Columns of a tile (two 16-lane vectors) and of a packed panel.
pub(crate) const NR: usize = 32;
/// Rows of a full tile: 24 accumulators, two vectors of `b` and a broadcast of `a`
/// fit the 32 registers (12 rows took a step's products 2–9% less time than 8,
/// 14 rows more).
pub(crate) const MR: usize = 12;
/// The inner dimension is walked in blocks of this many, so that a block of a
/// panel of `b` (256 KiB) stays in the core's L2 cache while the tiles of every
/// row read it. A recurrent step's products (`k` = `H` or `4H`) run in one block:
/// splitting `k = 2048` in blocks of 512 took 2–10% longer (each block stores and
/// reloads the tile).
const KC: usize = 2048;

/// Where the kernel reads `b` from.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    /// Row `kk` of `b` starts at `ptr + kk·ld`, its columns one apart.
    Rows { ptr: *const f32, ld: isize },
    /// Packed panels.
    Packed(&'a Packed),
}

/// The operands of one product (`m`, `n`, `k` all above zero) `c = alpha·a@b + beta·c`, as raw strided pointers
/// (`a[i, kk]` at `a + i·sa.0 + kk·sa.1`; `c` rows `ldc` apart, columns one apart).
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: *const f32,
    pub sa: (isize, isize),
    pub b: Src<'a>,
    pub beta: f32,
    pub c: *mut f32,
    pub ldc: isize,
    /// Memory the kernel after this product reads, asked for while it runs.
    pub upcoming: Upcoming,
}

/// Bytes per cache line.
const LINE_BYTES: usize = LINE * std::mem::size_of::<f32>();

/// Up to [`Upcoming::MAX`] ranges of memory that the kernel run after a product reads
/// (or writes): the product's tiles ask their core's L2 cache for them, one line
/// every 4 steps of `k`, a share of the lines per tile ([`Upcoming::share`]). Each
/// thread asks for the same fraction of every range as of the product's panels: the
/// first rows for the first share, as the engine's row-split kernels hand their rows
/// to the threads. An address is only a hint: the ranges need not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Upcoming {
    len: usize,
    ranges: [(usize, usize); Upcoming::MAX],
}

impl Default for Upcoming {
    fn default() -> Self {
        Upcoming::EMPTY
    }
}

impl Upcoming {
    /// The most ranges held.
    pub(crate) const MAX: usize = 4;

    /// None.
    pub(crate) const EMPTY: Upcoming = Upcoming { len: 0, ranges: [(0, 0); Upcoming::MAX] };

    /// Adds `bytes` bytes from `addr` (nothing when full or empty); returns whether it
    /// was added.
    pub(crate) fn push(&mut self, addr: usize, bytes: usize) -> bool {
        if self.len == Self::MAX || bytes == 0 {
            return false;
        }
        self.ranges[self.len] = (addr, bytes);
        self.len += 1;
        true
    }

    /// Share `s` of `of` of every range, as a kernel splitting its rows in `of` hands
    /// them out (the first for the first share).
    pub(crate) fn part(&self, s: usize, of: usize) -> Upcoming {
        let mut out = Upcoming::EMPTY;
        for &(addr, bytes) in &self.ranges[..self.len] {
            let (lo, hi) = (bytes * s / of, bytes * (s + 1) / of);
            out.push(addr + lo, hi - lo);
        }
        out
    }

    /// Whether it holds no range.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lines of panels `range` of `panels`' share of every range: (first line's
    /// address, lines) per range. The shares of a split cover every line of each range
    /// once.
    fn share(&self, range: &Range<usize>, panels: usize) -> [(usize, usize); Upcoming::MAX] {
        let mut out = [(0, 0); Upcoming::MAX];
        let panels = panels.max(1);
        for (o, &(addr, bytes)) in out.iter_mut().zip(&self.ranges[..self.len]) {
            let first = addr - addr % LINE_BYTES;
            let lines = (addr + bytes - first).div_ceil(LINE_BYTES);
            let (lo, hi) = (lines * range.start / panels, lines * range.end / panels);
            *o = (first + lo * LINE_BYTES, hi - lo);
        }
        out
    }
}

/// Hands each tile of a share its next lines of the share's [`Upcoming`] lines, range
/// after range (a tile's lines lie in one range): as many per tile as cover them all
/// when the share has more tiles than ranges. A tile asks for as many as its steps
/// allow (one per 4 steps of `k`: every one at a recurrent step's shapes).
struct Lines {
    share: [(usize, usize); Upcoming::MAX],
    per: usize,
    at: usize,
    done: usize,
}

impl Lines {
    fn new(up: &Upcoming, range: &Range<usize>, panels: usize, tiles: usize) -> Self {
        let share = up.share(range, panels);
        let total: usize = share.iter().map(|s| s.1).sum();
        // A tile's lines end with their range, so each range may leave one tile short.
        let ranges = share.iter().filter(|s| s.1 > 0).count();
        Lines { share, per: total.div_ceil(tiles.saturating_sub(ranges).max(1)), at: 0, done: 0 }
    }

    /// The next tile's lines.
    fn next(&mut self) -> Ahead {
        while self.at < Upcoming::MAX && self.done >= self.share[self.at].1 {
            self.at += 1;
            self.done = 0;
        }
        let Some(&(first, lines)) = self.share.get(self.at) else {
            return Ahead { lines: std::ptr::null(), count: 0 };
        };
        let count = self.per.min(lines - self.done);
        let ahead = Ahead { lines: (first + self.done * LINE_BYTES) as *const f32, count };
        self.done += count;
        ahead
    }
}

// SAFETY: a job is shared by the threads computing disjoint column ranges of `c`;
// `a` and `b` are only read.
unsafe impl Send for Job<'_> {}
unsafe impl Sync for Job<'_> {}

impl Job<'_> {
    /// The number of [`NR`]-column panels of the output.
    pub(crate) fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Computes the output columns of panels `range`.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and the pointers address the operands as described on
    /// [`Job`] for every index below `m`, `n`, `k`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn run(&self, range: Range<usize>) {
        let tiles = range.len() * self.m.div_ceil(MR) * self.k.div_ceil(KC);
        let mut upcoming = Lines::new(&self.upcoming, &range, self.panels(), tiles);
        let mut k0 = 0;
        while k0 < self.k {
            let kc = KC.min(self.k - k0);
            // Only the first block scales the old `c`; the later ones add to it.
            let beta = if k0 == 0 { self.beta } else { 1.0 };
            for p in range.clone() {
                let j0 = p * NR;
                let cols = NR.min(self.n - j0);
                let (b, sb) = match self.b {
                    Src::Rows { ptr, ld } => (ptr.offset(k0 as isize * ld + j0 as isize), ld),
                    Src::Packed(pk) => (pk.data.as_ptr().add(p * pk.k * NR + k0 * NR), NR as isize),
                };
                // The next packed panel's block, a share of its lines per tile of this one.
                let (next, lines) = match self.b {
                    Src::Packed(pk) if p + 1 < range.end => {
                        (pk.data.as_ptr().add((p + 1) * pk.k * NR + k0 * NR), kc * NR / LINE)
                    }
                    _ => (std::ptr::null(), 0),
                };
                let per = lines.div_ceil(self.m.div_ceil(MR));
                let (mut i, mut tile) = (0, 0);
                while i < self.m {
                    let a = self.a.offset(i as isize * self.sa.0 + k0 as isize * self.sa.1);
                    let c = self.c.offset(i as isize * self.ldc + j0 as isize);
                    let first = (tile * per).min(lines);
                    tile += 1;
                    let ahead = Ahead { lines: next.wrapping_add(first * LINE), count: per.min(lines - first) };
                    let then = upcoming.next();
                    let t = Tile {
                        a,
                        sa: self.sa,
                        b,
                        sb,
                        k: kc,
                        c,
                        ldc: self.ldc,
                        cols,
                        alpha: self.alpha,
                        beta,
                        ahead,
                        then,
                    };
                    i += match tile_rows(self.m - i) {
                        12 => t.rows::<12>(),
                        11 => t.rows::<11>(),
                        10 => t.rows::<10>(),
                        9 => t.rows::<9>(),
                        8 => t.rows::<8>(),
                        7 => t.rows::<7>(),
                        6 => t.rows::<6>(),
                        5 => t.rows::<5>(),
                        4 => t.rows::<4>(),
                        3 => t.rows::<3>(),
                        2 => t.rows::<2>(),
                        _ => t.rows::<1>(),
                    };
                }
            }
            k0 += kc;
        }
    }
}

/// The rows of the next tile, `left` rows of the output still to compute: as few
/// tiles as [`MR`] rows allow, as even as they can be (a batch of 64 rows in tiles of
/// 11, 11, 11, 11, 10 and 10 rather than five of 12 and one of 4, whose 8
/// accumulators barely cover the latency of the multiply-adds). On an Emerald Rapids
/// Xeon, W1-L's step took 3.5 ms (1.3%) less time in two alternations of 20 replays,
/// W3-L's 2.3 and 0 ms less; a batch of 32 (12, 12, 8 before, 11, 11, 10 now) is
/// unchanged. Each element is summed in the same order either way.
fn tile_rows(left: usize) -> usize {
    left.div_ceil(left.div_ceil(MR))
}

/// The most rows of a tile a spaced copy puts into one set of the L1 cache, and the
/// most one set of a small L1 holds before the rows are read from such a copy.
pub(crate) const SPREAD: usize = 6;

thread_local! {
    /// A thread's copy of a left operand with its rows spaced out ([`Job::spaced`]).
    static SPACED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Job<'_> {
    /// [`Job::run`] reading `a` (row-major) from this thread's copy of it, with its rows
    /// as far apart as their length rounded up to 16 elements, or a cache line more
    /// when that too is a multiple of 4 KiB ([`super::rows_alias`]): rows that fall
    /// into one set of the L1 cache evict each other while a tile broadcasts from them.
    /// Each thread copies `a` itself, so that no thread reads lines another has just
    /// written. The same values as [`Job::run`].
    ///
    /// # Safety
    /// As [`Job::run`], and `a`'s rows are contiguous (`sa.1 == 1`).
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn spaced(&self, range: Range<usize>) {
        SPACED.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut ld = self.k.next_multiple_of(16);
            if super::rows_alias(self.m, (ld as isize, 1), SPREAD) {
                ld += 16;
            }
            if buf.len() < self.m * ld {
                buf.resize(self.m * ld, 0.0);
            }
            for i in 0..self.m {
                let row = std::slice::from_raw_parts(self.a.offset(i as isize * self.sa.0), self.k);
                buf[i * ld..i * ld + self.k].copy_from_slice(row);
            }
            let job = Job { a: buf.as_ptr(), sa: (ld as isize, 1), ..*self };
            job.run(range);
        });
    }
}

/// One tile's operands, already offset to its first row, column and inner index.
struct Tile {
    a: *const f32,
    sa: (isize, isize),
    b: *const f32,
    sb: isize,
    k: usize,
    c: *mut f32,
    ldc: isize,
    cols: usize,
    alpha: f32,
    beta: f32,
    ahead: Ahead,
    /// Its lines of the memory the next kernel reads ([`Upcoming`]).
    then: Ahead,
}

/// Floats per cache line.
const LINE: usize = 16;

/// Cache lines of the next panel a tile asks the L2 cache for while it runs, one every
/// 4 steps of `k`: `count` lines from `lines` on, as many as the tile's steps allow
/// (three quarters of a panel's, over its tiles, at a recurrent step's shapes). A recurrent step's weight is read
/// from the L3 cache at every step (a core's half of W1-L's `W_hh` is as large as its
/// L2), and each panel's first tile otherwise waits for its lines. On an Emerald
/// Rapids Xeon this took W1-L's step 2.3–3.3 ms (about 1.2%) and W3-L's 1.8–3.0 ms
/// less, in three alternations of 15 replays each.
#[derive(Clone, Copy)]
struct Ahead {
    lines: *const f32,
    count: usize,
}

impl Tile {
    /// Computes `R` rows of the tile; returns `R`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows<const R: usize>(&self) -> usize {
        let m0: __mmask16 = if self.cols >= 16 { 0xffff } else { ((1u32 << self.cols) - 1) as u16 };
        let m1: __mmask16 = if self.cols >= NR {
            0xffff
        } else if self.cols > 16 {
            ((1u32 << (self.cols - 16)) - 1) as u16
        } else {
            0
        };
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        let (a, b) = (self.a, self.b);
        let (si, sk) = self.sa;
        let step = |kk: usize, lo: &mut [__m512; R], hi: &mut [__m512; R]| {
            let bp = b.offset(kk as isize * self.sb);
            let b0 = _mm512_maskz_loadu_ps(m0, bp);
            let b1 = _mm512_maskz_loadu_ps(m1, bp.add(16));
            for r in 0..R {
                let x = _mm512_set1_ps(*a.offset(r as isize * si + kk as isize * sk));
                lo[r] = _mm512_fmadd_ps(x, b0, lo[r]);
                hi[r] = _mm512_fmadd_ps(x, b1, hi[r]);
            }
        };
        let mut kk = 0;
        let (mut asked, mut then) = (0, 0);
        while kk + 4 <= self.k {
            // Hints: they read nothing and cannot fault, wherever they point.
            if asked < self.ahead.count {
                _mm_prefetch::<_MM_HINT_T1>(self.ahead.lines.wrapping_add(asked * LINE).cast());
                asked += 1;
            }
            if then < self.then.count {
                _mm_prefetch::<_MM_HINT_T1>(self.then.lines.wrapping_add(then * LINE).cast());
                then += 1;
            }
            step(kk, &mut lo, &mut hi);
            step(kk + 1, &mut lo, &mut hi);
            step(kk + 2, &mut lo, &mut hi);
            step(kk + 3, &mut lo, &mut hi);
            kk += 4;
        }
        while kk < self.k {
            step(kk, &mut lo, &mut hi);
            kk += 1;
        }
        let (al, be) = (_mm512_set1_ps(self.alpha), _mm512_set1_ps(self.beta));
        for r in 0..R {
            let c = self.c.offset(r as isize * self.ldc);
            let (mut x0, mut x1) = (_mm512_mul_ps(lo[r], al), _mm512_mul_ps(hi[r], al));
            if self.beta != 0.0 {
                // BLAS semantics: with beta = 0 the old `c` is never read (it may be NaN).
                x0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, c), be, x0);
                x1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, c.add(16)), be, x1);
            }
            _mm512_mask_storeu_ps(c, m0, x0);
            _mm512_mask_storeu_ps(c.add(16), m1, x1);
        }
        R
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_split_into_as_few_tiles_as_can_be_as_even_as_can_be() {
        for m in 1..=300 {
            let mut tiles = Vec::new();
            let mut left = m;
            while left > 0 {
                let r = tile_rows(left);
                assert!((1..=MR).contains(&r), "{m} rows: a tile of {r}");
                tiles.push(r);
                left -= r;
            }
            assert_eq!(tiles.len(), m.div_ceil(MR), "{m} rows: {tiles:?}");
            let (lo, hi) = (tiles.iter().min().unwrap(), tiles.iter().max().unwrap());
            assert!(hi - lo <= 1, "{m} rows: {tiles:?}");
        }
        assert_eq!(tile_rows(64), 11);
        assert_eq!(tile_rows(32), 11);
    }

    #[test]
    fn the_shares_and_tiles_of_a_split_ask_for_every_upcoming_line_once() {
        let mut up = Upcoming::default();
        assert!(up.is_empty());
        // Ranges not on line boundaries, one shorter than a line, one empty (not kept).
        for (addr, bytes) in [(6400 + 20, 393_216), (1 << 20, 3), (0, 0), (9 << 20, 131_072 + 100), (5 << 24, 640)] {
            up.push(addr, bytes);
        }
        assert!(!up.push(1, 1), "full");
        let want: Vec<usize> = up.ranges[..up.len]
            .iter()
            .flat_map(|&(a, b)| (a / LINE_BYTES..(a + b).div_ceil(LINE_BYTES)).map(|l| l * LINE_BYTES))
            .collect();
        for (panels, shares, tiles_per_panel) in [(48, 2, 6), (16, 2, 6), (16, 3, 1), (5, 4, 6), (1, 1, 6)] {
            let mut got = Vec::new();
            for s in 0..shares {
                let range = panels * s / shares..panels * (s + 1) / shares;
                let tiles = range.len() * tiles_per_panel;
                let mut lines = Lines::new(&up, &range, panels, tiles);
                for _ in 0..tiles {
                    let t = lines.next();
                    got.extend((0..t.count).map(|k| t.lines as usize + k * LINE_BYTES));
                }
                assert_eq!(lines.next().count, 0, "every line handed out by the last tile");
            }
            got.sort_unstable();
            let mut sorted = want.clone();
            sorted.sort_unstable();
            assert_eq!(got, sorted, "{panels} panels, {shares} shares");
        }
    }
}
