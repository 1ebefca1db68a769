//! Gradient clipping with PyTorch's semantics.

use std::collections::BTreeMap;

use ndarray::ArrayD;
use unrolled_autograd::{Error, Float, Result};

fn bad(op: &'static str, reason: String) -> Error {
    Error::InvalidInput { op, scope: String::new(), reason, shapes: Vec::new() }
}

fn tensor_norm<T: Float>(a: &ArrayD<T>, p: f64) -> f64 {
    if p.is_infinite() {
        a.iter().fold(0.0f64, |m, x| m.max(x.f64().abs()))
    } else {
        a.iter().map(|x| x.f64().abs().powf(p)).sum::<f64>().powf(1.0 / p)
    }
}

/// The `p`-norm of all gradients together (the norm of the per-tensor norms), as
/// `torch.nn.utils.get_total_norm`; `p = f64::INFINITY` for the max norm.
///
/// # Errors
/// [`Error::InvalidInput`] for `p` that is not positive.
pub fn grad_norm<T: Float>(grads: &BTreeMap<String, ArrayD<T>>, p: f64) -> Result<f64> {
    if p.is_nan() || p <= 0.0 {
        return Err(bad("grad_norm", format!("norm type {p} is not positive")));
    }
    let norms = grads.values().map(|g| tensor_norm(g, p));
    Ok(if p.is_infinite() { norms.fold(0.0, f64::max) } else { norms.map(|n| n.powf(p)).sum::<f64>().powf(1.0 / p) })
}

/// Scales all gradients together so their total `p`-norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`: `coef = min(1, max_norm / (total + 1e-6))`,
/// every gradient multiplied by `coef`. Returns the total norm *before* clipping.
///
/// # Errors
/// [`Error::InvalidInput`] for a negative `max_norm` or a `p` that is not positive.
pub fn clip_grad_norm<T: Float>(grads: &mut BTreeMap<String, ArrayD<T>>, max_norm: f64, p: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(bad("clip_grad_norm", format!("max_norm {max_norm} is negative")));
    }
    let total = grad_norm(grads, p)?;
    // As PyTorch: a non-finite total makes the coefficient NaN, and the gradients with it.
    let coef = max_norm / (total + 1e-6);
    if coef.is_nan() || coef < 1.0 {
        let c = T::of(coef);
        grads.values_mut().for_each(|g| g.mapv_inplace(|x| x * c));
    }
    Ok(total)
}

/// Clips each gradient tensor to its own `p`-norm of at most `max_norm` (the same
/// rule as [`clip_grad_norm`], tensor by tensor). Returns each tensor's norm before clipping.
///
/// # Errors
/// As [`clip_grad_norm`].
pub fn clip_grad_norm_per_tensor<T: Float>(
    grads: &mut BTreeMap<String, ArrayD<T>>,
    max_norm: f64,
    p: f64,
) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for (name, g) in grads.iter_mut() {
        let mut one = BTreeMap::from([(String::new(), std::mem::take(g))]);
        let n = clip_grad_norm(&mut one, max_norm, p)?;
        *g = one.remove("").expect("inserted above");
        out.insert(name.clone(), n);
    }
    Ok(out)
}

/// Clamps every gradient element to `[-clip, clip]`, as `torch.nn.utils.clip_grad_value_`.
///
/// # Errors
/// [`Error::InvalidInput`] for a negative `clip`.
pub fn clip_grad_value<T: Float>(grads: &mut BTreeMap<String, ArrayD<T>>, clip: f64) -> Result<()> {
    if clip.is_nan() || clip < 0.0 {
        return Err(bad("clip_grad_value", format!("clip value {clip} is negative")));
    }
    let c = T::of(clip);
    // NaN stays NaN, as in PyTorch's clamp.
    grads.values_mut().for_each(|g| {
        g.mapv_inplace(|x| {
            if x < -c {
                -c
            } else if x > c {
                c
            } else {
                x
            }
        })
    });
    Ok(())
}
