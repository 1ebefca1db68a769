//! Stable, rounded, human-readable renderings for snapshot tests (`insta`).
//!
//! Numbers are printed with a fixed number of significant digits, so a snapshot
//! does not change with the last bits of a summation order, and a real change of
//! a gradient shows as a readable diff.

use std::fmt::Write;

use ndarray::{ArrayBase, ArrayD, Data, IxDyn};

use crate::error::Result;
use crate::float::Float;
use crate::graph::Graph;
use crate::node::NodeId;

/// The default number of significant digits.
pub const DIGITS: usize = 6;

/// `v` rounded to `digits` significant digits, in a stable form: fixed notation
/// for magnitudes in [1e-4, 1e6), scientific otherwise; `0` for zero (and `-0`).
pub fn format_number(v: f64, digits: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let digits = digits.max(1);
    let rounded: f64 = format!("{:.*e}", digits - 1, v).parse().unwrap_or(v);
    let e = rounded.abs().log10().floor() as i32;
    if (-4..6).contains(&e) {
        let dec = (digits as i32 - 1 - e).max(0) as usize;
        let s = format!("{rounded:.dec$}");
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
        if s == "-0" {
            "0".into()
        } else {
            s
        }
    } else {
        format!("{:.*e}", digits - 1, rounded)
    }
}

/// One tensor: a header `name [shape]`, then one line per row of the last axis,
/// prefixed with the row's index.
pub fn format_tensor<T: Float, S: Data<Elem = T>>(name: &str, a: &ArrayBase<S, IxDyn>, digits: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{name} {:?}", a.shape());
    if a.ndim() == 0 {
        let v = a.iter().next().map_or(0.0, |x| x.f64());
        let _ = writeln!(s, "  {}", format_number(v, digits));
        return s;
    }
    let last = a.ndim() - 1;
    for (k, row) in a.lanes(ndarray::Axis(last)).into_iter().enumerate() {
        let vals: Vec<String> = row.iter().map(|x| format_number(x.f64(), digits)).collect();
        if a.ndim() == 1 {
            let _ = writeln!(s, "  {}", vals.join(" "));
        } else {
            let mut idx = Vec::with_capacity(last);
            let mut r = k;
            for d in (0..last).rev() {
                idx.push(r % a.shape()[d]);
                r /= a.shape()[d];
            }
            idx.reverse();
            let _ = writeln!(s, "  {idx:?}: {}", vals.join(" "));
        }
    }
    s
}

/// Several named tensors, in the order given (a `BTreeMap` gives sorted names).
pub fn format_tensors<'a, T: Float>(
    items: impl IntoIterator<Item = (&'a str, &'a ArrayD<T>)>,
    digits: usize,
) -> String {
    items.into_iter().map(|(n, a)| format_tensor(n, a, digits)).collect()
}

/// The gradient of `loss` for every parameter of `g`, by name, rounded to
/// [`DIGITS`] significant digits: the text to pin with `insta::assert_snapshot!`.
///
/// # Errors
/// As [`Graph::grad`].
pub fn param_grads<T: Float>(g: &mut Graph<T>, loss: NodeId) -> Result<String> {
    let grads = g.param_grad_values(loss)?;
    Ok(format_tensors(grads.iter().map(|(k, v)| (k.as_str(), v)), DIGITS))
}
