//! Shared helpers for the integration tests: where the real model and the
//! golden data live, and a once-per-binary load of the model file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lottery_models::load::GgufFile;

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GOLDEN_FILE: &str = "smollm2-135m-instruct-q4_1.json";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("models/ has a parent")
        .to_path_buf()
}

/// The real model, or `None` when `LOTTERY_SKIP_MODEL_TESTS=1`. A missing
/// file fails the test: silently skipping would hide that nothing was checked.
pub fn model_path() -> Option<PathBuf> {
    if std::env::var("LOTTERY_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("LOTTERY_SKIP_MODEL_TESTS=1: skipping a test that needs {MODEL_FILE}");
        return None;
    }
    let path = match std::env::var_os("LOTTERY_MODEL") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("models-cache").join(MODEL_FILE),
    };
    assert!(
        path.is_file(),
        "model file {} not found: run `bash scripts/fetch-model.sh` from the repo root \
         (or set LOTTERY_MODEL=/path/to/{MODEL_FILE}, or LOTTERY_SKIP_MODEL_TESTS=1 to skip)",
        path.display()
    );
    Some(path)
}

/// The model, parsed once per test binary.
pub fn model() -> Option<&'static GgufFile> {
    static MODEL: OnceLock<GgufFile> = OnceLock::new();
    let path = model_path()?;
    Some(MODEL.get_or_init(|| {
        GgufFile::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
    }))
}

/// `shared/golden/<name>`: beside the checkout (`../shared`) or inside it.
pub fn golden_path(name: &str) -> PathBuf {
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/golden")
            .join(name),
        repo_root().join("shared/golden").join(name),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("golden file {name} not found at {candidates:?}"))
}

pub fn golden() -> &'static serde_json::Value {
    static GOLDEN: OnceLock<serde_json::Value> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let p = golden_path(GOLDEN_FILE);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    })
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

pub fn s(v: &serde_json::Value) -> &str {
    v.as_str().expect("a string")
}
