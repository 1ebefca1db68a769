//! Copies between row-major buffers: the fast paths of `select`, `narrow`, `stack`
//! and `concat` when their inputs are laid out row-major, as the engine's own values are,
//! and the result is small. A small tensor (an unrolled step of a narrow network)
//! then costs a few slice copies instead of ndarray's per-axis iteration over
//! dynamic shapes. A join on the first axis that [`join`] does not take (a large
//! result, or parts strided along their rows) is copied by the engine's threads
//! ([`join_leading`]); the other large results keep ndarray's copy.

/// The largest result (in elements) copied here.
const MAX_ELEMENTS: usize = 1 << 16;

use ndarray::{ArrayBase, ArrayD, ArrayViewD, Data, IxDyn};

/// The product of a shape's extents (1 for a scalar).
fn count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// An array of `shape` from a row-major buffer of its size.
fn array<T>(shape: &[usize], v: Vec<T>) -> ArrayD<T> {
    super::fresh::row_major(shape, v)
}

/// Index `index` of `axis` of a row-major `x`, the axis removed; `None` for another
/// layout or a large result.
pub(crate) fn select<T: Copy, S: Data<Elem = T>>(
    x: &ArrayBase<S, IxDyn>,
    axis: usize,
    index: usize,
    shape: &[usize],
) -> Option<ArrayD<T>> {
    // Without the axis of length 1, the same elements in the same order.
    narrow(x, axis, index, 1, shape)
}

/// Indices `start..start + len` of `axis` of a row-major `x` (a narrow, the result
/// `shape`): one contiguous run per index of the axes before `axis`. `None` for
/// another layout or a large result.
pub(crate) fn narrow<T: Copy, S: Data<Elem = T>>(
    x: &ArrayBase<S, IxDyn>,
    axis: usize,
    start: usize,
    len: usize,
    shape: &[usize],
) -> Option<ArrayD<T>> {
    if count(shape) > MAX_ELEMENTS {
        return None;
    }
    let s = x.as_slice()?;
    let (outer, n, inner) = (count(&x.shape()[..axis]), x.shape()[axis], count(&x.shape()[axis + 1..]));
    let mut v = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let at = (o * n + start) * inner;
        v.extend_from_slice(&s[at..at + len * inner]);
    }
    Some(array(shape, v))
}

/// Row-major parts joined along `axis` of the result `shape`: each part contributes,
/// for every index of the axes before `axis`, its `count(part.shape[axis..])`
/// contiguous elements. That covers `concat` (parts of the result's rank) and `stack`
/// (parts without the new axis, one index each). `None` if a part is not row-major,
/// or for a large result.
/// Each part comes as its elements (`None` unless row-major) and its shape.
pub(crate) fn join<'a, T: Copy + 'a>(
    parts: impl ExactSizeIterator<Item = (Option<&'a [T]>, &'a [usize])>,
    axis: usize,
    shape: &[usize],
) -> Option<ArrayD<T>> {
    if count(shape) > MAX_ELEMENTS {
        return None;
    }
    let mut slices = Vec::with_capacity(parts.len());
    for (s, ps) in parts {
        slices.push((s?, count(&ps[axis.min(ps.len())..])));
    }
    let outer = count(&shape[..axis]);
    let mut v = Vec::with_capacity(count(shape));
    for o in 0..outer {
        for &(s, w) in &slices {
            v.extend_from_slice(&s[o * w..(o + 1) * w]);
        }
    }
    Some(array(shape, v))
}

/// Parts joined along the result's first axis (a `stack` or `concat` on axis 0), of
/// any size: each part's elements in row-major order, one after another, copied by
/// the engine's threads when the result is large (a large copy runs several times
/// faster on two cores than on one). A part may be strided as long as its last axis
/// is contiguous (the `h` blocks of fused LSTM steps); `None` for another layout.
pub(crate) fn join_leading<T: crate::float::Float>(parts: &[ArrayViewD<'_, T>], shape: &[usize]) -> Option<ArrayD<T>> {
    // Each part as rows of contiguous elements, and where it starts in the result.
    let mut runs: Vec<(usize, Vec<&[T]>)> = Vec::with_capacity(parts.len());
    let mut at = 0;
    for p in parts {
        let rows: Vec<&[T]> = match p.to_slice() {
            Some(s) => vec![s],
            None if p.ndim() > 0 && p.shape().iter().all(|&d| d > 0) => {
                p.rows().into_iter().map(|r| r.to_slice()).collect::<Option<Vec<_>>>()?
            }
            None => Vec::new(),
        };
        runs.push((at, rows));
        at += p.len();
    }
    if at != count(shape) {
        return None;
    }
    let copy = |first: usize, out: &mut [T]| {
        let end = first + out.len();
        for (start, rows) in &runs {
            let Some(w) = rows.first().map(|r| r.len()) else { continue };
            let len = w * rows.len();
            let (lo, hi) = (first.max(*start), end.min(start + len));
            let mut e = lo;
            while e < hi {
                let (r, c) = ((e - start) / w, (e - start) % w);
                let n = (w - c).min(hi - e);
                out[e - first..e - first + n].copy_from_slice(&rows[r][c..c + n]);
                e += n;
            }
        }
    };
    // SAFETY: the parts' runs tile the result (their lengths sum to its size, checked
    // above), so every element of each block is written, and none is read.
    Some(unsafe { crate::ops::fresh::filled(shape, |out| crate::gemm::for_rows(out, 1, &copy)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{concatenate, stack, Axis, ShapeBuilder, Slice};

    fn parts<'a>(xs: &[&'a ArrayD<f64>]) -> impl ExactSizeIterator<Item = (Option<&'a [f64]>, &'a [usize])> + use<'a> {
        xs.iter().map(|x| (x.as_slice(), x.shape())).collect::<Vec<_>>().into_iter()
    }

    fn iota(shape: &[usize]) -> ArrayD<f64> {
        array(shape, (0..count(shape)).map(|v| v as f64).collect())
    }

    #[test]
    fn select_matches_index_axis_on_every_axis() {
        let x = iota(&[3, 4, 5]);
        for axis in 0..3 {
            for index in 0..x.shape()[axis] {
                let want = x.index_axis(Axis(axis), index).to_owned();
                let got = select(&x, axis, index, want.shape()).expect("row-major");
                assert_eq!(got, want, "axis {axis} index {index}");
            }
        }
        let mut column_major = ArrayD::zeros(IxDyn(&[3, 4, 5]).f());
        column_major.assign(&x);
        assert!(column_major.as_slice().is_none());
        assert_eq!(select(&column_major, 0, 0, &[4, 5]), None);
    }

    #[test]
    fn narrow_matches_slice_axis_on_every_axis() {
        let x = iota(&[3, 4, 5]);
        for axis in 0..3 {
            let n = x.shape()[axis];
            for start in 0..n {
                for len in 0..=n - start {
                    let want = x.slice_axis(Axis(axis), Slice::from(start..start + len)).to_owned();
                    let got = narrow(&x, axis, start, len, want.shape()).expect("row-major");
                    assert_eq!(got, want, "axis {axis} start {start} len {len}");
                }
            }
        }
        let mut column_major = ArrayD::zeros(IxDyn(&[3, 4, 5]).f());
        column_major.assign(&x);
        assert_eq!(narrow(&column_major, 1, 1, 2, &[3, 2, 5]), None);
        assert_eq!(narrow(&iota(&[2, MAX_ELEMENTS + 1]), 0, 1, 1, &[1, MAX_ELEMENTS + 1]), None);
    }

    /// Large joins on the first axis (the threads' copy) of row-major parts and of
    /// parts strided along their rows, against ndarray's.
    #[test]
    fn join_leading_matches_ndarray_for_strided_and_row_major_parts() {
        let wide = iota(&[7, 40, 1200]);
        let parts: Vec<_> = (0..7).map(|k| wide.slice(ndarray::s![k, .., 100..1100]).into_dyn()).collect();
        assert!(parts[0].as_slice().is_none());
        let want = stack(Axis(0), &parts).expect("fits");
        assert_eq!(join_leading(&parts, want.shape()), Some(want));
        let (a, b) = (iota(&[300, 250]), iota(&[1, 250]).mapv(|v| -v));
        let mixed = [a.view(), b.view(), wide.slice(ndarray::s![0, ..3, ..250]).into_dyn()];
        let want = concatenate(Axis(0), &mixed).expect("fits");
        assert_eq!(join_leading(&mixed, want.shape()), Some(want));
        // A part without contiguous rows is left to ndarray.
        let cols = wide.slice(ndarray::s![0, .., ..;2]).into_dyn();
        assert_eq!(join_leading(&[cols.clone(), cols], &[80, 600]), None);
    }

    #[test]
    fn join_matches_ndarray_for_concat_and_stack() {
        let (a, b) = (iota(&[2, 3, 4]), iota(&[2, 1, 4]).mapv(|v| v + 100.0));
        let want = concatenate(Axis(1), &[a.view(), b.view()]).expect("fits");
        assert_eq!(join(parts(&[&a, &b]), 1, want.shape()), Some(want));
        for axis in 0..3 {
            let want = stack(Axis(axis), &[a.view(), a.view(), a.view()]).expect("fits");
            assert_eq!(join(parts(&[&a, &a, &a]), axis, want.shape()), Some(want), "stack on axis {axis}");
        }
        let want = concatenate(Axis(2), &[a.view(), a.view()]).expect("fits");
        assert_eq!(join(parts(&[&a, &a]), 2, want.shape()), Some(want));
        let mut column_major = ArrayD::zeros(IxDyn(&[2, 3, 4]).f());
        column_major.assign(&a);
        assert!(column_major.as_slice().is_none());
        assert_eq!(join(parts(&[&a, &column_major]), 0, &[4, 3, 4]), None);
        // A large result is left to ndarray's copy.
        let big = iota(&[2, MAX_ELEMENTS]);
        assert_eq!(join(parts(&[&big, &big]), 0, &[4, MAX_ELEMENTS]), None);
        assert_eq!(select(&iota(&[2, MAX_ELEMENTS + 1]), 0, 1, &[MAX_ELEMENTS + 1]), None);
        assert!(select(&big, 0, 1, &[MAX_ELEMENTS]).is_some());
    }
}
