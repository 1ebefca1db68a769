//! Output buffers that a kernel writes in full, allocated without being cleared.

use std::any::TypeId;

use ndarray::{ArrayD, IxDyn};

use crate::float::Float;
use crate::gemm::for_row_blocks;

/// An array of `shape` whose elements `fill` writes, in row-major order.
///
/// In a release build, for `f32` and `f64`, the buffer is not cleared first:
/// clearing is a pass over fresh memory as long as the kernel's own (a recurrent
/// step's fused cell and its products write hundreds of kilobytes of new values per
/// step). A build with debug assertions (what `cargo test` runs) fills it with NaN
/// first instead, so an element a kernel fails to write shows in every test that
/// reads it. Other element types start from zeros. A large output takes a buffer of
/// its length that a released value left, when the running graph kept one
/// ([`crate::spares`]).
///
/// # Safety
/// `fill` must write every element of its slice before it reads that element.
pub(crate) unsafe fn filled<T: Float>(shape: &[usize], fill: impl FnOnce(&mut [T])) -> ArrayD<T> {
    let n = shape.iter().product();
    let plain = TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>();
    // A large buffer a released value left behind (see `spares`): its old values are
    // overwritten (NaN first under debug assertions, as below).
    let v = if let Some(mut v) = crate::spares::take::<T>(n) {
        if cfg!(debug_assertions) || !plain {
            v.fill(if plain { T::nan() } else { T::zero() });
        }
        fill(&mut v);
        v
    } else if cfg!(debug_assertions) || !plain {
        let mut v = vec![if plain { T::nan() } else { T::zero() }; n];
        fill(&mut v);
        v
    } else {
        // SAFETY: `T` is `f32` or `f64`, and the caller's contract is `uncleared`'s.
        unsafe { uncleared(n, fill) }
    };
    row_major(shape, v)
}

/// `v` as a row-major array of `shape`, whose element count `v` must have (checked).
///
/// ndarray's checked constructor also proves the strides fit, work that every
/// small output of a replay would pay again for a layout known to fit.
pub(crate) fn row_major<T>(shape: &[usize], v: Vec<T>) -> ArrayD<T> {
    if v.is_empty() || std::mem::size_of::<T>() == 0 {
        // A shape with a zero extent: its other extents may be anything, which the
        // checked constructor bounds (an empty output is never a hot path; nor are
        // zero-sized elements, which the engine never stores).
        return ArrayD::from_shape_vec(IxDyn(shape), v).expect("an empty buffer of an empty shape");
    }
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    assert_eq!(Some(v.len()), n, "a buffer of the shape's size");
    // SAFETY: `v` holds exactly the product of `shape` elements (computed without
    // overflow), so the default (row-major) strides address every element of it once
    // and none outside; every extent is non-zero, and the product, the length of a
    // `Vec` of a non-zero-sized `T`, is at most `isize::MAX`.
    unsafe { ArrayD::from_shape_vec_unchecked(IxDyn(shape), v) }
}

/// A `[rows, width]` array whose rows `f(first_row, block)` writes, the blocks of
/// whole rows split over the engine's threads as by [`crate::gemm::for_rows`]: the fused cells'
/// kernels and their gradients.
///
/// # Safety
/// As [`filled`]: `f` must write every element of its block before it reads that
/// element.
pub(crate) unsafe fn filled_rows<T: Float>(
    rows: usize,
    width: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) -> ArrayD<T> {
    // SAFETY: as `filled_row_blocks`'s.
    unsafe { filled_row_blocks(rows, width, 1, f) }
}

/// [`filled_rows`] with every block of rows but the last a whole number of `align`
/// rows (see [`crate::gemm::for_row_blocks`]).
///
/// # Safety
/// As [`filled`]: `f` must write every element of its block before it reads that
/// element.
pub(crate) unsafe fn filled_row_blocks<T: Float>(
    rows: usize,
    width: usize,
    align: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) -> ArrayD<T> {
    // SAFETY: `for_row_blocks` hands each row to `f` once, and `f` writes it whole.
    unsafe { filled(&[rows, width], |out| for_row_blocks(out, width, out.len(), align, f)) }
}

/// [`filled`]'s release path: `n` elements of `f32` or `f64`, never cleared.
///
/// # Safety
/// `T` must be `f32` or `f64`, and `fill` must write every element of its slice
/// before it reads that element.
unsafe fn uncleared<T: Float>(n: usize, fill: impl FnOnce(&mut [T])) -> Vec<T> {
    let mut v = Vec::<T>::with_capacity(n);
    // SAFETY: the allocation holds `n` aligned elements of `T`. The slice covers them
    // before they are initialized; for `f32` and `f64` (no invalid bit patterns, no
    // destructors) nothing reads through it before `fill` has written the element
    // read, which is the caller's contract, so no uninitialized value is ever read,
    // and all `n` are initialized when the length is set. This is how ndarray's own
    // `dot` hands a product its output (a `Vec::with_capacity` given its length
    // unwritten, then `beta = 0`). A panic in `fill` leaves the length at 0: the
    // buffer is freed without being read (the worker pool waits for every share
    // before it passes a panic on).
    unsafe {
        fill(std::slice::from_raw_parts_mut(v.as_mut_ptr(), n));
        v.set_len(n);
    }
    v
}

/// A buffer of `n` elements that several kernels write later, each its own part (the
/// parts of a join laid out in place): a kept spare of that length, else a new one; in
/// a release build, for `f32` and `f64`, never cleared. Under debug assertions every
/// element starts as NaN (zero for other types), as in [`filled`].
///
/// # Safety
/// No element may be read before one of the writers has written it.
pub(crate) unsafe fn unwritten<T: Float>(n: usize) -> Vec<T> {
    let plain = TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>();
    let nan = if plain { T::nan() } else { T::zero() };
    if let Some(mut v) = crate::spares::take::<T>(n) {
        if cfg!(debug_assertions) || !plain {
            v.fill(nan);
        }
        return v;
    }
    if cfg!(debug_assertions) || !plain {
        return vec![nan; n];
    }
    // SAFETY: as `uncleared`'s: `f32` and `f64` have no invalid bit patterns and no
    // destructors, and the caller writes each element before anything reads it. Unlike
    // `uncleared`'s, the elements are written after the length is set, through views
    // of the parts; an element no part wrote is never read (a join whose parts were not
    // all written is computed by copying, and its buffer dropped or kept as a spare,
    // whose next user writes it whole first).
    unsafe { uncleared(n, |_| {}) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uncleared_path_keeps_what_fill_wrote() {
        // The release path, which a test build's `filled` does not take.
        for n in [0, 1, 17, 1 << 16] {
            // SAFETY: f32 and f64; each closure writes every element and reads none.
            let v = unsafe { uncleared::<f32>(n, |s| s.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32)) };
            assert!(v.len() == n && v.iter().enumerate().all(|(i, &x)| x == i as f32));
            let w = unsafe { uncleared::<f64>(n, |s| s.fill(-2.5)) };
            assert!(w.len() == n && w.iter().all(|&x| x == -2.5));
        }
    }

    #[test]
    fn every_element_is_what_fill_wrote() {
        for n in [0, 1, 17, 1 << 16] {
            // SAFETY: the closure writes every element and reads none.
            let v = unsafe { filled::<f32>(&[n], |s| s.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32)) };
            assert_eq!(v.len(), n);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
            let w = unsafe { filled::<f64>(&[n], |s| s.fill(-2.5)) };
            assert!(w.len() == n && w.iter().all(|&x| x == -2.5));
        }
    }

    #[cfg(debug_assertions)]
    #[test]
    fn an_element_left_unwritten_is_nan_under_test() {
        // SAFETY: with debug assertions the buffer is initialized (NaN) before `fill`.
        let v = unsafe { filled::<f32>(&[4], |s| s[..3].fill(1.0)) };
        assert_eq!(v.as_slice().expect("row-major")[..3], [1.0; 3]);
        assert!(v[3].is_nan());
    }
}
