//! OpenBLAS's kernels for this CPU: an OpenBLAS too old to know the CPU is told its
//! kernels before it loads, so the products never run on kernels that miss the
//! CPU's vector units. (One test: the process's OpenBLAS loads once.)

use ndarray::Array2;
use unrolled::autograd::gemm;

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
    if let Some(core) = gemm::openblas_core() {
        assert!(users || !gemm::openblas_family_misses_cpu(core), "OpenBLAS runs {core} kernels");
    }
}
