//! Browser smoke test: the conformance suite (one shape per case) in real
//! headless Chromium through WebGPU, proving the kernels are WebGPU-clean.
//! Run by scripts/test-browser.sh (wasm-bindgen-test-runner + chromedriver).
#![cfg(target_arch = "wasm32")]

use lottery_engine::{conformance, Gpu, GpuOptions};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn conformance_quick_in_the_browser() {
    let mut gpu = Gpu::new_async(&GpuOptions::default())
        .await
        .unwrap_or_else(|e| panic!("no WebGPU adapter in this browser: {e}"));
    let adapter = format!(
        "{} ({}, tier {})",
        gpu.adapter.name,
        gpu.adapter.backend,
        gpu.tier.name()
    );
    let results = conformance::run_suite_async(&mut gpu, true).await;
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} {} {}: {}", r.kernel, r.format, r.variant, r.detail))
        .collect();
    assert!(results.len() > 40, "only {} cases ran", results.len());
    assert!(
        failed.is_empty(),
        "on {adapter}, {} of {} cases failed:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
    console_log!("{adapter}: {} conformance cases passed", results.len());
}
