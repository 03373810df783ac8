#![allow(dead_code)]
use lottery_engine::{Gpu, GpuOptions};

/// The adapter the tests run on: LOTTERY_BACKEND / LOTTERY_ADAPTER choose it
/// (CI runs the suite on lavapipe Vulkan and on llvmpipe GL).
pub fn gpu() -> Gpu {
    Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Relative + absolute tolerance check that names the first bad index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        assert!(
            err <= tol && g.is_finite(),
            "{what}: index {i}: expected {w}, got {g} (|err| {err} > tol {tol})"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: max abs err {worst:.3e}");
}
