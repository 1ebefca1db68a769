//! OpenBLAS's kernels for this CPU: an OpenBLAS too old to know the CPU is told its
//! kernels before it loads, so the products never run on kernels that miss the
//! CPU's vector units. (One test: the process's OpenBLAS loads once.)

use ndarray::Array2;
use unrolled::autograd::gemm;

/// OpenBLAS's kernel families without AVX2 and FMA (as `openblas_get_corename` prints
/// them, lower-cased).
const PRE_AVX2: &[&str] = &[
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

#[test]
fn openblas_runs_kernels_that_use_the_cpu() {
    let users = std::env::var_os("OPENBLAS_CORETYPE").is_some();
    // SAFETY: the harness runs this binary's only test; its main thread waits for it
    // and nothing else reads the environment meanwhile.
    let named = unsafe { gemm::name_cpu_for_openblas() };
    let a = Array2::from_shape_fn((300, 200), |(i, j)| (i * 7 + j) as f32 * 1e-3);
    let b = Array2::from_shape_fn((200, 100), |(i, j)| (i + 3 * j) as f32 * 1e-3);
    let mut c = Array2::zeros((300, 100));
    gemm::gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut());
    let want = a.dot(&b);
    assert!(c.iter().zip(&want).all(|(x, y)| (x - y).abs() <= 1e-4 * y.abs().max(1.0)));
    // Nothing is passed over: OpenBLAS chose well, or was told its kernels and,
    // loaded again, runs them (or the user chose them).
    assert_eq!(gemm::openblas_passed_over(), None);
    if named.is_some() {
        assert_eq!(gemm::backend(), "openblas");
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(core) = gemm::openblas_core() {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        assert!(
            !avx2 || users || !PRE_AVX2.contains(&core.to_ascii_lowercase().as_str()),
            "OpenBLAS runs {core} kernels on a CPU with AVX2"
        );
    }
}
