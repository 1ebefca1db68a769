//! Helpers shared by the test suites.
#![allow(dead_code)]

pub mod fixture;

use ndarray::{ArrayD, IxDyn};

/// Deterministic uniform values in [lo, hi) (SplitMix64), for test inputs.
pub fn uniform(shape: &[usize], seed: u64, lo: f64, hi: f64) -> ArrayD<f64> {
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xDEAD_BEEF;
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            lo + (hi - lo) * ((z >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
}

/// Relative error as the conformance suite measures it: |a - e| / max(1, |e|).
pub fn rel_err(a: f64, e: f64) -> f64 {
    (a - e).abs() / e.abs().max(1.0)
}
