#![allow(dead_code)]
use lottery::engine::reference::Rng;
use lottery::engine::{formats, Gpu, GpuOptions, WeightFormat};
use lottery::models::load::{GgufWriter, MetaValue};
use lottery::models::quantize::ggml_type;
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

/// The real model on the default adapter, loaded once per test binary:
/// a load (upload and pipeline compilation) is seconds on lavapipe, and a
/// `Model` is immutable, so tests share it (each makes its own sessions).
pub fn load_model() -> Arc<Model> {
    static MODEL: std::sync::OnceLock<Arc<Model>> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| load_model_with(&GpuOptions::default()))
        .clone()
}

pub fn load_model_with(opts: &GpuOptions) -> Arc<Model> {
    let gpu = Arc::new(Gpu::new(opts).unwrap_or_else(|e| panic!("{e}")));
    Arc::new(Model::load(gpu, &model_path(), &mut |_, _| {}).unwrap_or_else(|e| panic!("{e}")))
}

/// The CPU reference's greedy continuation of `prompt`, up to `steps`
/// tokens, stopping before the first step whose top-2 gap is under
/// `min_gap` (too close to call against a GPU's rounding).
pub fn cpu_greedy(
    cpu: &lottery::models::arch::llama_cpu::LlamaCpu,
    prompt: &[u32],
    steps: usize,
    min_gap: f32,
) -> Vec<u32> {
    let vocab = cpu.cfg.vocab;
    let mut ids = prompt.to_vec();
    let mut want = Vec::new();
    for _ in 0..steps {
        let logits = cpu.forward(&ids);
        let row = &logits[(ids.len() - 1) * vocab..];
        let best = lottery::engine::reference::argmax(row) as u32;
        let mut sorted = row.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] < min_gap {
            break;
        }
        want.push(best);
        ids.push(best);
    }
    want
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Model width and FFN width: 256-weight block formats need rows of 256.
pub fn dims(fmt: WeightFormat) -> (usize, usize) {
    if fmt.block_size() == 256 {
        (256, 512)
    } else {
        (64, 96)
    }
}
pub const VOCAB: usize = 40;
pub const LAYERS: usize = 2;

/// A 2-layer Llama-graph GGUF (d 64, 4 heads, 2 KV heads, ff 96) with `fmt`
/// matrices, architecture `arch` (its keys under `<arch>.`), holding the
/// tensors for which `keep(name)` is true; callers add more before writing.
pub fn tiny_gguf(arch: &str, fmt: WeightFormat, keep: &dyn Fn(&str) -> bool) -> GgufWriter {
    let (d, ff) = dims(fmt);
    let kv = d / 2; // 2 KV heads of d / 4
    let mut rng = Rng::new(11);
    let mut w = GgufWriter::new();
    let meta: Vec<(String, MetaValue)> = vec![
        (
            "general.architecture".into(),
            MetaValue::String(arch.into()),
        ),
        (format!("{arch}.block_count"), MetaValue::U32(LAYERS as u32)),
        (format!("{arch}.embedding_length"), MetaValue::U32(d as u32)),
        (format!("{arch}.attention.head_count"), MetaValue::U32(4)),
        (format!("{arch}.attention.head_count_kv"), MetaValue::U32(2)),
        (
            format!("{arch}.feed_forward_length"),
            MetaValue::U32(ff as u32),
        ),
        (format!("{arch}.context_length"), MetaValue::U32(64)),
        (format!("{arch}.rope.freq_base"), MetaValue::F32(10000.0)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            MetaValue::F32(1e-5),
        ),
        (
            "tokenizer.ggml.model".into(),
            MetaValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            MetaValue::String("smollm".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(
                (0..VOCAB)
                    .map(|i| MetaValue::String(((b'!' + i as u8) as char).to_string()))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.merges".into(), MetaValue::Array(vec![])),
        ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(0)),
    ];
    for (k, v) in meta {
        w.add_metadata(k, v).unwrap();
    }
    let mut add =
        |name: &str, rows: usize, cols: usize, fmt: WeightFormat, scale: f32, rng: &mut Rng| {
            let x = rng.vec(rows * cols, scale);
            if !keep(name) {
                return;
            }
            let q = formats::quantize(fmt, &x).unwrap();
            w.add_tensor(name, &[cols as u64, rows as u64], ggml_type(fmt), q)
                .unwrap();
        };
    add(
        "token_embd.weight",
        VOCAB,
        d,
        WeightFormat::Q8_0,
        1.0,
        &mut rng,
    );
    for l in 0..LAYERS {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        add(&n("attn_norm"), 1, d, WeightFormat::F32, 1.0, &mut rng);
        add(&n("attn_q"), d, d, fmt, 0.3, &mut rng);
        add(&n("attn_k"), kv, d, fmt, 0.3, &mut rng);
        add(&n("attn_v"), kv, d, fmt, 0.3, &mut rng);
        add(&n("attn_output"), d, d, fmt, 0.2, &mut rng);
        add(&n("ffn_norm"), 1, d, WeightFormat::F32, 1.0, &mut rng);
        add(&n("ffn_gate"), ff, d, fmt, 0.2, &mut rng);
        add(&n("ffn_up"), ff, d, fmt, 0.2, &mut rng);
        add(&n("ffn_down"), d, ff, fmt, 0.2, &mut rng);
    }
    add("output_norm.weight", 1, d, WeightFormat::F32, 1.0, &mut rng);
    w
}

/// all-MiniLM-L6-v2: $LOTTERY_EMBED_MODEL or models-cache/ (scripts/fetch-minilm.sh).
pub fn minilm_dir() -> PathBuf {
    if let Ok(p) = std::env::var("LOTTERY_EMBED_MODEL") {
        return PathBuf::from(p);
    }
    let p = repo().join("models-cache/all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-minilm.sh",
        p.display()
    );
    p
}

pub fn minilm_golden() -> serde_json::Value {
    let p = golden_dir().join("minilm-l6-v2.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}
