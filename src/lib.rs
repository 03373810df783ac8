//! lottery: run small compressed language models on any GPU through wgpu and
//! our own WGSL kernels.
//!
//! ```no_run
//! use lottery::{Gpu, GpuOptions, Model, Session, SessionOptions, GenerateOptions};
//! use std::sync::Arc;
//! let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
//! let model = Arc::new(Model::load(gpu, "model.gguf".as_ref(), &mut |_, _| {})?);
//! let mut session = Session::new(model.clone(), SessionOptions::default())?;
//! let prompt = model.tokenizer.encode("The capital of France is")?;
//! let out = session.generate(&prompt, &GenerateOptions::default(), |_, text| { print!("{text}"); true })?;
//! # Ok::<(), lottery::models::Error>(())
//! ```

pub use lottery_engine as engine;
pub use lottery_models as models;

pub use engine::kv::{KvDtype, KvPolicy, KvTypes};
pub use engine::{Gpu, GpuOptions};
pub use models::arch::bert::{BertEncoder, Embedding};
pub use models::kb::{ChunkOptions, Hit, KnowledgeBase, SearchDevice};
pub use models::load::{ChatMessage, ChatTemplate, Tokenizer};
pub use models::{
    GenerateOptions, Generation, Model, SamplerSettings, Session, SessionOptions, StopReason,
};

use std::path::PathBuf;

/// Where `lottery` looks for the default model: `$LOTTERY_MODEL`, else
/// `models-cache/SmolLM2-135M-Instruct.Q4_1.gguf` under `$LOTTERY_CACHE`, the
/// current directory or the source checkout.
pub fn default_model_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LOTTERY_MODEL") {
        return Some(PathBuf::from(p));
    }
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let mut dirs = Vec::new();
    if let Ok(c) = std::env::var("LOTTERY_CACHE") {
        dirs.push(PathBuf::from(c));
    }
    dirs.push(PathBuf::from("models-cache"));
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models-cache"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.exists())
}

/// Where `lottery embed` looks for the default encoder: `$LOTTERY_EMBED_MODEL`,
/// else `models-cache/all-MiniLM-L6-v2` under `$LOTTERY_CACHE`, the current
/// directory or the source checkout.
pub fn default_embed_model_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LOTTERY_EMBED_MODEL") {
        return Some(PathBuf::from(p));
    }
    let name = "all-MiniLM-L6-v2";
    let mut dirs = Vec::new();
    if let Ok(c) = std::env::var("LOTTERY_CACHE") {
        dirs.push(PathBuf::from(c));
    }
    dirs.push(PathBuf::from("models-cache"));
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models-cache"));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.join("model.safetensors").exists())
}
