#![allow(dead_code)]
use lottery::engine::{Gpu, GpuOptions};
use lottery::models::Model;
use std::path::PathBuf;
use std::sync::Arc;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn golden_dir() -> PathBuf {
    repo().join("../shared/golden")
}

pub fn golden() -> serde_json::Value {
    let p = golden_dir().join("smollm2-135m-instruct-q4_1.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}

/// The real model: $LOTTERY_MODEL or models-cache/ (scripts/fetch-model.sh).
pub fn model_path() -> PathBuf {
    if let Ok(p) = std::env::var("LOTTERY_MODEL") {
        return PathBuf::from(p);
    }
    let p = repo().join("models-cache/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-model.sh",
        p.display()
    );
    p
}

pub fn load_model() -> Arc<Model> {
    load_model_with(&GpuOptions::default())
}

pub fn load_model_with(opts: &GpuOptions) -> Arc<Model> {
    let gpu = Arc::new(Gpu::new(opts).unwrap_or_else(|e| panic!("{e}")));
    Arc::new(Model::load(gpu, &model_path(), &mut |_, _| {}).unwrap_or_else(|e| panic!("{e}")))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
