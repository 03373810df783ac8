//! Hugging Face checkpoints: a tiny random Llama written here in HF layout
//! (safetensors, rotate-half rotary convention) must give the logits of an
//! HF-convention CPU forward on the same weights; and the real model
//! converted to safetensors gives its GGUF twin's greedy tokens.

mod common;
use lottery::engine::reference::{self as r, Rng};
use lottery::engine::{Gpu, GpuOptions};
use lottery::models::arch::llama_cpu::LlamaCpu;
use lottery::models::load::hf;
use lottery::models::{GenerateOptions, Model, Session, SessionOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

const D: usize = 64;
const FF: usize = 96;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HD: usize = D / HEADS;
const VOCAB: usize = 40;
const LAYERS: usize = 2;

/// Random weights by HF name, [out, in] row-major.
fn weights() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut rng = Rng::new(21);
    let mut m = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, rng: &mut Rng| {
        let n = shape.iter().product();
        let v = if shape.len() == 1 {
            (0..n).map(|_| 1.0 + 0.1 * rng.normal()).collect()
        } else {
            rng.vec(n, scale)
        };
        m.insert(name, (shape, v));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, D],
        1.0,
        &mut rng,
    );
    for l in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        add(p("input_layernorm"), vec![D], 0.0, &mut rng);
        add(p("self_attn.q_proj"), vec![D, D], 0.3, &mut rng);
        add(p("self_attn.k_proj"), vec![KV_HEADS * HD, D], 0.3, &mut rng);
        add(p("self_attn.v_proj"), vec![KV_HEADS * HD, D], 0.3, &mut rng);
        add(p("self_attn.o_proj"), vec![D, D], 0.2, &mut rng);
        add(p("post_attention_layernorm"), vec![D], 0.0, &mut rng);
        add(p("mlp.gate_proj"), vec![FF, D], 0.2, &mut rng);
        add(p("mlp.up_proj"), vec![FF, D], 0.2, &mut rng);
        add(p("mlp.down_proj"), vec![D, FF], 0.2, &mut rng);
    }
    add("model.norm.weight".into(), vec![D], 0.0, &mut rng);
    add("lm_head.weight".into(), vec![VOCAB, D], 0.5, &mut rng);
    m
}

/// Writes the weights as safetensors: one f32 file, or (`sharded`) matrices
/// in f16 across two shards listed in `model.safetensors.index.json`.
fn write_dir(dir: &std::path::Path, w: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, sharded: bool) {
    write_dir_with(dir, w, sharded, &|_| {})
}

/// As [`write_dir`], with `edit` applied to config.json.
fn write_dir_with(
    dir: &std::path::Path,
    w: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    sharded: bool,
    edit: &dyn Fn(&mut serde_json::Value),
) {
    std::fs::create_dir_all(dir).unwrap();
    let f16 = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect()
    };
    let bytes: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = w
        .iter()
        .map(|(n, (s, v))| {
            if sharded && s.len() == 2 {
                (n.clone(), s.clone(), safetensors::Dtype::F16, f16(v))
            } else {
                (
                    n.clone(),
                    s.clone(),
                    safetensors::Dtype::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            }
        })
        .collect();
    let shard_of = |i: usize| if sharded { i % 2 } else { 0 };
    let files = if sharded {
        vec![
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ]
    } else {
        vec!["model.safetensors"]
    };
    for (f, file) in files.iter().enumerate() {
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .enumerate()
            .filter(|(i, _)| shard_of(*i) == f)
            .map(|(_, (n, s, dt, b))| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(file)).unwrap();
    }
    if sharded {
        let map: serde_json::Map<String, serde_json::Value> = bytes
            .iter()
            .enumerate()
            .map(|(i, (n, ..))| (n.clone(), serde_json::json!(files[shard_of(i)])))
            .collect();
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
        )
        .unwrap();
    }
    let mut config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": D, "intermediate_size": FF,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB, "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": false,
    });
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    // A word-level tokenizer over single characters is enough here.
    let vocab: serde_json::Map<String, serde_json::Value> = (0..VOCAB)
        .map(|i| (((b'!' + i as u8) as char).to_string(), serde_json::json!(i)))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"String": ""}, "behavior": "Isolated", "invert": false},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "!"},
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": "!"}"#).unwrap();
}

/// The forward with HF's conventions (rotate-half rotary on unpermuted Q/K).
fn hf_forward(w: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, ids: &[u32]) -> Vec<f32> {
    let g = |n: &str| &w[n].1;
    let t = ids.len();
    let table = r::rope_table(t, HD, 10000.0);
    let mut x: Vec<f32> = ids
        .iter()
        .flat_map(|&i| g("model.embed_tokens.weight")[i as usize * D..][..D].to_vec())
        .collect();
    for l in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        let xn = r::rmsnorm(&x, g(&p("input_layernorm")), D, 1e-5);
        let mut q = r::matmul(&xn, g(&p("self_attn.q_proj")), t, D, D);
        let mut k = r::matmul(&xn, g(&p("self_attn.k_proj")), t, KV_HEADS * HD, D);
        let v = r::matmul(&xn, g(&p("self_attn.v_proj")), t, KV_HEADS * HD, D);
        r::rope_neox(&mut q, HEADS, HD, 0, &table);
        r::rope_neox(&mut k, KV_HEADS, HD, 0, &table);
        let a = r::attention(&q, &k, &v, t, 0, HEADS, KV_HEADS, HD);
        let o = r::matmul(&a, g(&p("self_attn.o_proj")), t, D, D);
        x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
        let xn = r::rmsnorm(&x, g(&p("post_attention_layernorm")), D, 1e-5);
        let h = r::swiglu(
            &r::matmul(&xn, g(&p("mlp.gate_proj")), t, FF, D),
            &r::matmul(&xn, g(&p("mlp.up_proj")), t, FF, D),
        );
        let dn = r::matmul(&h, g(&p("mlp.down_proj")), t, D, FF);
        x.iter_mut().zip(&dn).for_each(|(x, o)| *x += o);
    }
    let xn = r::rmsnorm(&x, g("model.norm.weight"), D, 1e-5);
    r::matmul(&xn, g("lm_head.weight"), t, VOCAB, D)
}

#[test]
fn tiny_hf_llama_matches_an_hf_convention_reference() {
    for sharded in [false, true] {
        let dir =
            std::env::temp_dir().join(format!("lottery-hf-tiny-{}-{sharded}", std::process::id()));
        let mut w = weights();
        if sharded {
            // The f16 shards hold f16-rounded matrices; the reference sees the same.
            for (s, v) in w.values_mut() {
                if s.len() == 2 {
                    v.iter_mut()
                        .for_each(|x| *x = half::f16::from_f32(*x).to_f32());
                }
            }
        }
        write_dir(&dir, &w, sharded);
        let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());
        let ids: Vec<u32> = vec![3, 17, 5, 39, 0, 22, 8, 8, 31];
        for quantize in [
            None,
            Some(lottery::engine::WeightFormat::Q8_0),
            Some(lottery::engine::WeightFormat::Q4_K),
        ] {
            // Unquantized: the HF-convention forward on the original weights.
            // Quantized at load: our CPU forward on exactly the quantized weights.
            let want = match quantize {
                None => hf_forward(&w, &ids),
                Some(q) => LlamaCpu::load(&hf::gguf_from_hf_dir(&dir, Some(q)).unwrap())
                    .unwrap()
                    .forward(&ids),
            };
            let model =
                Arc::new(Model::load_with(gpu.clone(), &dir, quantize, &mut |_, _| {}).unwrap());
            assert_eq!(model.tokenizer.encode("$2&H").unwrap(), vec![3, 17, 5, 39]);
            let mut s = Session::new(
                model,
                SessionOptions {
                    ctx: 16,
                    kv: lottery::KvDtype::F32.into(),
                    max_batch: 4,
                    logit_rows: 4,
                    ..Default::default()
                },
            )
            .unwrap();
            let got = s.logits(&ids).unwrap();
            let tol = 1e-3;
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                (g - e).abs() <= tol * (1.0 + e.abs()),
                "sharded {sharded} {quantize:?}: logit {i} (pos {}, token {}): expected {e}, got {g}",
                i / VOCAB,
                i % VOCAB
            );
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// `lottery convert` writes the real model as safetensors; loading that
/// directory gives the GGUF twin's prompt ids and greedy tokens.
#[test]
fn converted_real_model_gives_the_same_greedy_tokens() {
    let dir = std::env::temp_dir().join(format!("lottery-hf-real-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lottery"))
        .args([
            "convert",
            "--model",
            common::model_path().to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());
    let gguf = Arc::new(Model::load(gpu.clone(), &common::model_path(), &mut |_, _| {}).unwrap());
    let hf = Arc::new(Model::load(gpu, &dir, &mut |_, _| {}).unwrap());
    let g = common::golden();
    for p in g["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "plain_capital" || p["name"] == "chat_haiku")
    {
        let text = p["text"].as_str().unwrap();
        let ids = hf.tokenizer.encode(text).unwrap();
        assert_eq!(
            ids,
            common::ids(&p["input_ids"]),
            "tokenizer.json round trip"
        );
        let opts = GenerateOptions {
            max_tokens: 8,
            stop_at_eos: false,
            ..Default::default()
        };
        let a = Session::new(
            gguf.clone(),
            SessionOptions {
                ctx: 128,
                ..Default::default()
            },
        )
        .unwrap()
        .generate(&ids, &opts, |_, _| true)
        .unwrap();
        let b = Session::new(
            hf.clone(),
            SessionOptions {
                ctx: 128,
                ..Default::default()
            },
        )
        .unwrap()
        .generate(&ids, &opts, |_, _| true)
        .unwrap();
        assert_eq!(a.ids, b.ids, "{}", p["name"]);
        // With an f32 cache the two agree to ~1e-4 (Q4_1 decoded in-kernel vs
        // f32 weights differ only in rounding); an f16 cache amplifies that.
        let lo = SessionOptions {
            ctx: 128,
            max_batch: 64,
            logit_rows: 64,
            kv: lottery::KvDtype::F32.into(),
            ..Default::default()
        };
        let la = Session::new(gguf.clone(), lo.clone())
            .unwrap()
            .logits(&ids)
            .unwrap();
        let lb = Session::new(hf.clone(), lo).unwrap().logits(&ids).unwrap();
        let worst = la
            .iter()
            .zip(&lb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-3,
            "{}: teacher-forced logits differ by {worst}",
            p["name"]
        );
        eprintln!("{}: teacher-forced logits within {worst:.2e}", p["name"]);
    }
    assert!(
        hf.chat_template.is_some(),
        "tokenizer_config.json carries the chat template"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Checkpoints whose config or tensors ask for math the Llama forward does
/// not do are refused with the key or tensors named; harmless extras load.
#[test]
fn hf_checkpoints_we_would_run_wrong_are_refused() {
    let dir = std::env::temp_dir().join(format!("lottery-hf-refuse-{}", std::process::id()));
    let load = |w: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
                edit: &dyn Fn(&mut serde_json::Value)| {
        std::fs::remove_dir_all(&dir).ok();
        write_dir_with(&dir, w, false, edit);
        hf::gguf_from_hf_dir(&dir, None).and_then(|g| {
            // The context, or the window a declared sliding window sets.
            lottery::models::arch::llama::LlamaConfig::from_gguf(&g)
                .map(|c| c.attn_window.unwrap_or(c.ctx_train))
        })
    };
    let base = weights();
    assert_eq!(load(&base, &|_| {}).unwrap(), 64);
    let refused: Vec<(&str, serde_json::Value)> = vec![
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 32}),
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "longrope", "rope_theta": 10000.0,
            "long_factor": [1.0], "short_factor": [1.0]}),
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "linear", "factor": 2.0}),
        ),
        ("hidden_act", serde_json::json!("gelu_pytorch_tanh")),
        ("head_dim", serde_json::json!(7)),
        ("partial_rotary_factor", serde_json::json!(0.5)),
        ("attention_bias", serde_json::json!(true)),
        ("final_logit_softcapping", serde_json::json!(30.0)),
    ];
    for (key, value) in refused {
        let err = load(&base, &|c| c[key] = value.clone())
            .expect_err(key)
            .to_string();
        assert!(err.contains(&format!("config.json: {key}")), "{key}: {err}");
    }
    // A sliding window is read (and runs as its ring); Qwen2-style
    // `use_sliding_window: false` turns it off.
    assert_eq!(
        load(&base, &|c| c["sliding_window"] = 16.into()).unwrap(),
        16
    );
    assert_eq!(
        load(&base, &|c| {
            c["sliding_window"] = 16.into();
            c["use_sliding_window"] = false.into();
        })
        .unwrap(),
        64
    );
    // Llama 3's scaling becomes rope_freqs, as llama.cpp's converter
    // writes it (tests/families.rs checks the math against transformers).
    load(&base, &|c| {
        c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    })
    .unwrap();
    // A bias tensor the config does not announce is still named.
    let mut w = base.clone();
    w.insert(
        "model.layers.1.self_attn.q_proj.bias".into(),
        (vec![D], vec![0.5; D]),
    );
    let err = load(&w, &|_| {}).unwrap_err().to_string();
    assert!(
        err.contains("model.layers.1.self_attn.q_proj.bias"),
        "{err}"
    );
    // Stored rotary frequencies load when they are the standard ones and are
    // refused when they are not (a scaled rope baked into the buffer).
    let inv = |scale: f64| -> Vec<f32> {
        (0..HD / 2)
            .map(|i| (scale / 10000f64.powf(2.0 * i as f64 / HD as f64)) as f32)
            .collect()
    };
    let mut w = base.clone();
    w.insert(
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        (vec![HD / 2], inv(1.0)),
    );
    load(&w, &|_| {}).unwrap();
    w.insert(
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        (vec![HD / 2], inv(0.25)),
    );
    let err = load(&w, &|_| {}).unwrap_err().to_string();
    assert!(err.contains("rotary_emb.inv_freq"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
