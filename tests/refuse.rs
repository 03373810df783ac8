//! Model files we would run wrong are refused with an error that names the
//! tensors or the metadata key, never loaded and run silently wrong.

mod common;
use lottery::engine::reference::Rng;
use lottery::engine::{Gpu, GpuOptions, WeightFormat};
use lottery::models::arch::llama::LlamaConfig;
use lottery::models::load::{GgmlType, GgufFile, GgufWriter, MetaValue};
use lottery::models::{Error, Model, Session, SessionOptions};
use std::sync::Arc;

fn f32_tensor(w: &mut GgufWriter, name: &str, n: usize) {
    let v = Rng::new(5).vec(n, 0.1);
    w.add_tensor(
        name,
        &[n as u64],
        GgmlType::F32,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
    .unwrap();
}

fn config(w: GgufWriter) -> lottery::models::Result<LlamaConfig> {
    LlamaConfig::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap())
}

fn tiny(arch: &str) -> GgufWriter {
    common::tiny_gguf(arch, WeightFormat::Q8_0, &|_| true)
}

/// A Qwen2 file runs with its Q/K/V biases (tests/families.rs checks the
/// math against transformers); biases no implemented family has (here on
/// the output projection, as Llama's `attention_bias` adds) are refused,
/// named, by the loader, the CLI and `lottery info`.
#[test]
fn biases_the_graph_does_not_apply_are_refused_naming_them() {
    let with_biases = || {
        let mut w = tiny("qwen2");
        for l in 0..common::LAYERS {
            f32_tensor(&mut w, &format!("blk.{l}.attn_q.bias"), 64);
            f32_tensor(&mut w, &format!("blk.{l}.attn_k.bias"), 32);
            f32_tensor(&mut w, &format!("blk.{l}.attn_v.bias"), 32);
        }
        w
    };
    let c = config(with_biases()).unwrap();
    assert!(c.qkv_bias && c.rope_halves, "{}", c.family());
    let mut w = with_biases();
    for l in 0..common::LAYERS {
        f32_tensor(&mut w, &format!("blk.{l}.attn_output.bias"), 64);
    }
    let path = std::env::temp_dir().join(format!("lottery-qwen2-bias-{}.gguf", std::process::id()));
    w.write_file(&path).unwrap();
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| panic!("{e}")));
    let err = match Model::load(gpu.clone(), &path, &mut |_, _| {}) {
        Ok(_) => panic!("a file with output-projection biases loaded"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        matches!(err, Error::UnexpectedTensors { count: 2, .. }),
        "{msg}"
    );
    for name in ["blk.0.attn_output.bias", "blk.1.attn_output.bias"] {
        assert!(msg.contains(name), "{msg}");
    }
    // Biases in some layers only: the missing ones are named.
    let mut w = tiny("qwen2");
    f32_tensor(&mut w, "blk.0.attn_q.bias", 64);
    f32_tensor(&mut w, "blk.0.attn_k.bias", 32);
    f32_tensor(&mut w, "blk.0.attn_v.bias", 32);
    let g = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let err = match LlamaConfig::from_gguf(&g).and_then(|c| {
        lottery::models::arch::llama::LlamaWeights::load(&gpu, &g, &c, &mut |_, _| {})
    }) {
        Ok(_) => panic!("biases in layer 0 only loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("blk.1.attn_q.bias"), "{err}");
    // The CLI says the same and exits non-zero.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lottery"))
        .args(["run", "--prompt", "$2&", "-n", "2", "--model"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("blk.0.attn_output.bias"), "{stderr}");
    // `lottery info` still describes the file, and says why it is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lottery"))
        .arg("info")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("qwen2.block_count (u32) = 2"), "{stdout}");
    assert!(
        stdout.contains("model: refused") && stdout.contains("blk.0.attn_output.bias"),
        "{stdout}"
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn the_plain_tiny_model_is_accepted_as_every_llama_like_arch() {
    for arch in ["llama", "qwen2", "mistral"] {
        let c = config(tiny(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(c.n_layer, common::LAYERS);
        assert_eq!(c.attn_window, None);
    }
}

#[test]
fn any_unexpected_tensor_is_named() {
    // A mixture-of-experts router, a stray tensor, and a layer past block_count.
    for extra in [
        "blk.0.ffn_gate_inp.weight",
        "foo.bar",
        "blk.2.attn_norm.weight",
    ] {
        let mut w = tiny("llama");
        f32_tensor(&mut w, extra, 8);
        let err = config(w).expect_err(extra).to_string();
        assert!(err.contains(&format!("`{extra}`")), "{extra}: {err}");
    }
    // Llama 3.1's rope_freqs is read, and must hold head_dim / 2 factors.
    let mut w = tiny("llama");
    f32_tensor(&mut w, "rope_freqs.weight", 7);
    let err = config(w).unwrap_err().to_string();
    assert!(err.contains("rope_freqs.weight"), "{err}");
    // Phi-3's longrope factors come as a pair.
    let mut w = tiny("phi3");
    w.add_tensor(
        "rope_factors_long.weight",
        &[8],
        GgmlType::F32,
        [1.5f32; 8].iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
    .unwrap();
    let err = config(w).unwrap_err().to_string();
    assert!(err.contains("rope_factors_short.weight"), "{err}");
    // Long lists are cut, with a count.
    let mut w = tiny("llama");
    for i in 0..12 {
        f32_tensor(&mut w, &format!("extra.{i:02}"), 4);
    }
    let err = config(w).unwrap_err().to_string();
    assert!(
        err.contains("12 tensor(s)") && err.contains("and 4 more"),
        "{err}"
    );
}

#[test]
fn missing_tensors_are_named() {
    let w = common::tiny_gguf("llama", WeightFormat::Q8_0, &|n| n != "blk.1.ffn_up.weight");
    let g = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let c = LlamaConfig::from_gguf(&g).unwrap();
    let gpu = Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let err = match lottery::models::arch::llama::LlamaWeights::load(&gpu, &g, &c, &mut |_, _| {}) {
        Ok(_) => panic!("loaded without blk.1.ffn_up.weight"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("blk.1.ffn_up.weight"), "{err}");
}

#[test]
fn metadata_that_changes_the_math_is_refused() {
    let cases: Vec<(&str, MetaValue)> = vec![
        ("llama.rope.scaling.type", MetaValue::String("yarn".into())),
        (
            "llama.rope.scaling.type",
            MetaValue::String("llama3".into()),
        ),
        ("llama.rope.scaling.factor", MetaValue::F32(8.0)),
        ("llama.rope.scaling.attn_factor", MetaValue::F32(1.2)),
        ("llama.rope.dimension_count", MetaValue::U32(8)),
        ("llama.attention.value_length", MetaValue::U32(32)),
        ("llama.expert_count", MetaValue::U32(8)),
        ("llama.attn_logit_softcapping", MetaValue::F32(50.0)),
        ("llama.final_logit_softcapping", MetaValue::F32(30.0)),
        ("llama.attention.layer_norm_epsilon", MetaValue::F32(1e-5)),
    ];
    for (key, value) in cases {
        let mut w = tiny("llama");
        w.add_metadata(key, value).unwrap();
        let err = config(w).expect_err(key);
        assert!(
            matches!(err, Error::UnsupportedMetadata { .. }),
            "{key}: {err}"
        );
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
    // Values that mean "no change" are accepted.
    let fine: Vec<(&str, MetaValue)> = vec![
        ("llama.rope.scaling.type", MetaValue::String("none".into())),
        // llama.cpp: linear with no factor scales by 1.
        (
            "llama.rope.scaling.type",
            MetaValue::String("linear".into()),
        ),
        ("llama.rope.scaling.factor", MetaValue::F32(1.0)),
        ("llama.rope.dimension_count", MetaValue::U32(16)),
        ("llama.attention.key_length", MetaValue::U32(16)),
        ("llama.expert_count", MetaValue::U32(0)),
        ("llama.vocab_size", MetaValue::U32(40)),
    ];
    for (key, value) in fine {
        let mut w = tiny("llama");
        w.add_metadata(key, value).unwrap();
        config(w).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

/// A declared sliding window is the model's attention: past the window a
/// session runs the cache as a sink-window:0,w ring (exactly that mask, the
/// CPU reference applies it too); up to the window any policy runs, past it
/// another policy is refused with the window named.
#[test]
fn a_sliding_window_runs_as_its_ring() {
    let mut w = tiny("mistral");
    w.add_metadata("mistral.attention.sliding_window", MetaValue::U32(16))
        .unwrap();
    let g = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let cpu = lottery::models::arch::llama_cpu::LlamaCpu::load(&g).unwrap();
    let path = std::env::temp_dir().join(format!("lottery-window-{}.gguf", std::process::id()));
    w.write_file(&path).unwrap();
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| panic!("{e}")));
    let model = Arc::new(Model::load(gpu, &path, &mut |_, _| {}).unwrap());
    assert_eq!(model.config.attn_window, Some(16));
    let ids: Vec<u32> = (0..40u32)
        .map(|i| (i * 7 + 3) % model.config.vocab as u32)
        .collect();
    let mut s = Session::new(
        model.clone(),
        SessionOptions {
            ctx: 48,
            kv: lottery::engine::kv::KvDtype::F32.into(),
            max_batch: 8,
            logit_rows: 8,
            ..SessionOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.kv_policy().label(), "sink-window:0,16");
    assert_eq!(s.max_positions(), 48);
    let got = s.logits(&ids).unwrap();
    let want = cpu.forward(&ids);
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-3, "sliding-window logits off by {err}");
    // Without the window the late positions would differ: the test sees it.
    let full = cpu.forward_masked(
        &ids,
        lottery::engine::kv::KvDtype::F32.into(),
        40,
        &|q, k| k <= q,
    );
    let v = model.config.vocab;
    let off = full[30 * v..]
        .iter()
        .zip(&want[30 * v..])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        off > 1e-2,
        "the window changes nothing on this input ({off})"
    );
    let opts = |ctx, p: &str| SessionOptions {
        ctx,
        kv_policy: lottery::engine::kv::KvPolicy::parse(p).unwrap(),
        ..SessionOptions::default()
    };
    let err = match Session::new(model.clone(), opts(32, "quest:4,2")) {
        Ok(_) => panic!("quest past the window was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("sliding attention window of 16"), "{err}");
    Session::new(model, opts(16, "quest:4,2")).unwrap();
    std::fs::remove_file(&path).ok();
}
