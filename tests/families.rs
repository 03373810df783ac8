//! Each model family against transformers, on the tiny random checkpoints
//! in tests/fixtures/families (made by scripts/make-family-fixtures.py):
//! the safetensors directory and llama.cpp's GGUF conversion of it, on
//! every tier, teacher-forced logits at every position within 1e-3 of
//! transformers' float32 logits; the CPU reference the same; and greedy
//! decode (the matvec path) following the CPU reference.

mod common;
use common::repo;
use lottery::engine::kv::KvDtype;
use lottery::engine::{Gpu, GpuOptions, Tier};
use lottery::models::arch::llama_cpu::LlamaCpu;
use lottery::models::load::hf;
use lottery::models::{GenerateOptions, Model, Session, SessionOptions};
use std::path::PathBuf;
use std::sync::Arc;

const TOL: f32 = 1e-3;

struct Fixture {
    dir: PathBuf,
    vocab: usize,
    prompts: Vec<Vec<u32>>,
    /// transformers' logits, prompt after prompt, [len, vocab] each.
    logits: Vec<Vec<f32>>,
}

fn fixture(family: &str) -> Fixture {
    let dir = repo().join("tests/fixtures/families").join(family);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("prompts.json")).unwrap()).unwrap();
    let vocab = meta["vocab"].as_u64().unwrap() as usize;
    let prompts: Vec<Vec<u32>> = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(common::ids)
        .collect();
    let bytes = std::fs::read(dir.join("logits.f32")).unwrap();
    let all: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut logits = Vec::new();
    let mut at = 0;
    for p in &prompts {
        logits.push(all[at..at + p.len() * vocab].to_vec());
        at += p.len() * vocab;
    }
    assert_eq!(at, all.len(), "logits.f32 holds more than the prompts");
    Fixture {
        dir,
        vocab,
        prompts,
        logits,
    }
}

/// The sliding window a model applies, on every layer or on its local ones.
fn window_of(c: &lottery::models::arch::llama::LlamaConfig) -> Option<usize> {
    c.attn_window
        .or((!c.local_layers.is_empty()).then_some(c.local_window))
}

fn worst(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

fn check_family(family: &str) {
    let f = fixture(family);
    let gguf = f.dir.join("model.gguf");
    let hf_dir = f.dir.join("hf");
    // llama.cpp's converter drops Mistral's sliding window (llama.cpp runs
    // it as full attention), so its GGUF matches transformers only up to
    // the window; the HF directory carries it and matches everywhere.
    let hf_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf_dir.join("config.json")).unwrap())
            .unwrap();
    let hf_window = hf_cfg["sliding_window"].as_u64().map(|w| w as usize);
    // The CPU reference (from the HF directory: every setting), checked
    // against transformers itself.
    let cpu = LlamaCpu::load(&hf::gguf_from_hf_dir(&hf_dir, None).unwrap()).unwrap();
    assert_eq!(window_of(&cpu.cfg), hf_window);
    for (p, want) in f.prompts.iter().zip(&f.logits) {
        let err = worst(&cpu.forward(p), want);
        assert!(err <= TOL, "{family}: CPU reference off by {err}");
    }
    let features = Gpu::new(&Default::default()).unwrap().device.features();
    for tier in Tier::supported(features) {
        let gpu = Arc::new(
            Gpu::new(&GpuOptions {
                tier: Some(tier),
                ..Default::default()
            })
            .unwrap(),
        );
        for path in [gguf.clone(), hf_dir.clone()] {
            let model = Arc::new(
                Model::load(gpu.clone(), &path, &mut |_, _| {})
                    .unwrap_or_else(|e| panic!("{family} {}: {e}", path.display())),
            );
            assert_eq!(model.config.vocab, f.vocab);
            let rows = match (window_of(&model.config), hf_window) {
                (None, Some(w)) => w,
                _ => usize::MAX,
            };
            for (p, want) in f.prompts.iter().zip(&f.logits) {
                let (p, want) = if p.len() > rows {
                    (&p[..rows], &want[..rows * f.vocab])
                } else {
                    (&p[..], &want[..])
                };
                // Batches of 16: the 40-token prompt spans three prefill
                // steps. The context fits the prompt, as a longrope session
                // picks its factors by its context where transformers picks
                // them by the sequence (the same once they fit).
                let mut s = Session::new(
                    model.clone(),
                    SessionOptions {
                        kv: KvDtype::F32.into(),
                        ctx: p.len().next_power_of_two().max(16) as u32,
                        max_batch: 16,
                        logit_rows: 16,
                        ..Default::default()
                    },
                )
                .unwrap();
                let err = worst(&s.logits(p).unwrap(), want);
                eprintln!(
                    "{family} {tier:?} {}: {} tokens, worst |logit error| {err:.2e}",
                    path.file_name().unwrap().to_string_lossy(),
                    p.len()
                );
                assert!(
                    err <= TOL,
                    "{family} {} on tier {tier:?}: logits off by {err} (> {TOL})",
                    path.display()
                );
            }
        }
    }
    // Decode steps (matvec, split attention; past Mistral's window, the
    // ring) against the CPU reference's argmax, until a near-tie.
    let model = Arc::new(
        Model::load(
            Arc::new(Gpu::new(&Default::default()).unwrap()),
            &hf_dir,
            &mut |_, _| {},
        )
        .unwrap(),
    );
    let prompt = f.prompts[0].clone();
    let want = common::cpu_greedy(&cpu, &prompt, 10, 1e-2);
    assert!(
        want.len() >= 3,
        "{family}: near-ties too early to check decode"
    );
    let mut s = Session::new(
        model,
        SessionOptions {
            ctx: 32,
            kv: KvDtype::F32.into(),
            ..Default::default()
        },
    )
    .unwrap();
    let g = s
        .generate(
            &prompt,
            &GenerateOptions {
                max_tokens: want.len(),
                stop_at_eos: false,
                ..Default::default()
            },
            |_, _| true,
        )
        .unwrap();
    assert_eq!(g.ids, want, "{family}: greedy decode");
}

/// Q/K/V biases; rotate-half rope rows.
#[test]
fn qwen2_matches_transformers() {
    check_family("qwen2");
}

/// Per-head Q/K RMSNorm; heads * head_dim (96) differs from the width (64).
#[test]
fn qwen3_matches_transformers() {
    check_family("qwen3");
}

/// `llama3` rope scaling (`rope_freqs` in GGUF, `rope_parameters` in HF);
/// tied embeddings.
#[test]
fn llama3_matches_transformers() {
    check_family("llama3");
}

/// Fused QKV and gate/up tensors.
#[test]
fn phi3_matches_transformers() {
    check_family("phi3");
}

/// Phi-3's longrope (128k models): short factors for the 7-token prompt,
/// long ones past the original context of 32, cos/sin scaled.
#[test]
fn phi3_longrope_matches_transformers() {
    check_family("phi3long");
}

/// Sliding-window attention (a window of 8 under a 40-token prompt).
#[test]
fn mistral_matches_transformers() {
    check_family("mistral");
}

/// Gemma 2: soft-capped attention scores and logits, every other layer
/// local (window 8), GeGLU, scaled embeddings, four norms a layer.
#[test]
fn gemma2_matches_transformers() {
    check_family("gemma2");
}

/// Gemma 3: GeGLU, scaled embeddings, four norms a layer, Q/K norms, five
/// local layers (window 8, rope base 10000) to one global (1e6).
#[test]
fn gemma3_matches_transformers() {
    check_family("gemma3");
}

/// The mistral fixture's GGUF holds a SentencePiece (`llama`) vocabulary
/// trained by the fixture script with byte fallback, as Llama 2, Mistral
/// and Phi-3 files do: our tokenizer gives sentencepiece's own ids, adds
/// BOS as llama.cpp does for such vocabularies, and decodes back.
#[test]
fn sentencepiece_vocabulary_from_gguf_matches_sentencepiece() {
    let f = fixture("mistral");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.dir.join("prompts.json")).unwrap())
            .unwrap();
    let g = lottery::models::load::GgufFile::open(f.dir.join("model.gguf")).unwrap();
    let tok = lottery::models::load::Tokenizer::for_model(&g).unwrap();
    let cases = meta["spm"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want = common::ids(&c["ids"]);
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
        let with_bos = tok.encode_with(text, true).unwrap();
        assert_eq!(with_bos[0], 1, "{text:?}: BOS first: {with_bos:?}");
        assert_eq!(&with_bos[1..], &want[..], "{text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), text, "{want:?}");
    }
}
