//! Output buffers that a kernel writes in full, allocated without being cleared.

use std::any::TypeId;

use crate::float::Float;

/// A buffer of `n` elements, written by `fill`.
///
/// In a release build, for `f32` and `f64`, the buffer is not cleared first:
/// clearing is a pass over fresh memory as long as the kernel's own (a recurrent
/// step's fused cell and its products write hundreds of kilobytes of new values per
/// step). A build with debug assertions (what `cargo test` runs) fills it with NaN
/// first instead, so an element a kernel fails to write shows in every test that
/// reads it. Other element types start from zeros.
///
/// # Safety
/// `fill` must write every element of its slice before it reads that element.
pub(crate) unsafe fn filled<T: Float>(n: usize, fill: impl FnOnce(&mut [T])) -> Vec<T> {
    let plain = TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>();
    if cfg!(debug_assertions) || !plain {
        let mut v = vec![if plain { T::nan() } else { T::zero() }; n];
        fill(&mut v);
        return v;
    }
    let mut v = Vec::<T>::with_capacity(n);
    // SAFETY: the allocation holds `n` elements of `T`, aligned; `T` is `f32` or
    // `f64`, which have no invalid bit patterns and no destructors, and the caller's
    // `fill` writes each element before reading it, so no uninitialized element is
    // ever read, and all `n` are initialized when the length is set.
    unsafe {
        fill(std::slice::from_raw_parts_mut(v.as_mut_ptr(), n));
        v.set_len(n);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_is_what_fill_wrote() {
        for n in [0, 1, 17, 1 << 16] {
            // SAFETY: the closure writes every element and reads none.
            let v = unsafe { filled::<f32>(n, |s| s.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32)) };
            assert_eq!(v.len(), n);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
            let w = unsafe { filled::<f64>(n, |s| s.fill(-2.5)) };
            assert!(w.len() == n && w.iter().all(|&x| x == -2.5));
        }
    }

    #[cfg(debug_assertions)]
    #[test]
    fn an_element_left_unwritten_is_nan_under_test() {
        // SAFETY: with debug assertions the buffer is initialized (NaN) before `fill`.
        let v = unsafe { filled::<f32>(4, |s| s[..3].fill(1.0)) };
        assert_eq!(&v[..3], &[1.0; 3]);
        assert!(v[3].is_nan());
    }
}
