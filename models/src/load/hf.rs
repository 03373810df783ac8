//! Hugging Face checkpoints (a directory with `config.json`,
//! `model.safetensors` or shards listed in `model.safetensors.index.json`,
//! `tokenizer.json`, `tokenizer_config.json`) to and from our model layout.
//!
//! Loading builds an in-memory GGUF with llama.cpp's tensor names, so one
//! loader and one forward serve both kinds of files. Q and K rows are
//! permuted the way llama.cpp's converter does, because our rotary kernel
//! rotates adjacent pairs while HF's rotates the two halves of each head.

use super::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use crate::arch::llama::{tensor_f32, LlamaConfig};
use crate::quantize::{quantize_gguf, QuantizeOptions};
use crate::{Error, Result};
use lottery_engine::WeightFormat;
use std::collections::BTreeMap;
use std::path::Path;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn model_err(msg: String) -> Error {
    Error::Model(msg)
}

/// HF name -> GGUF name for layer-independent tensors and per-layer suffixes.
const LAYER_NAMES: [(&str, &str); 9] = [
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];
/// Per-layer tensors only some families have, by GGUF architecture: in
/// any other family they stay unexpected, named by their HF names.
const FAMILY_NAMES: [(&str, &str, &str); 15] = [
    ("qwen2", "self_attn.q_proj.bias", "attn_q.bias"),
    ("qwen2", "self_attn.k_proj.bias", "attn_k.bias"),
    ("qwen2", "self_attn.v_proj.bias", "attn_v.bias"),
    ("qwen3", "self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("qwen3", "self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("phi3", "self_attn.qkv_proj.weight", "attn_qkv.weight"),
    ("phi3", "mlp.gate_up_proj.weight", "ffn_up.weight"),
    ("gemma3", "self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("gemma3", "self_attn.k_norm.weight", "attn_k_norm.weight"),
    // Gemma's four norms: its post_attention_layernorm is on the attention
    // output, where Llama's of the same name is the feed-forward input norm.
    (
        "gemma3",
        "post_attention_layernorm.weight",
        "post_attention_norm.weight",
    ),
    (
        "gemma3",
        "pre_feedforward_layernorm.weight",
        "ffn_norm.weight",
    ),
    (
        "gemma3",
        "post_feedforward_layernorm.weight",
        "post_ffw_norm.weight",
    ),
    (
        "gemma2",
        "post_attention_layernorm.weight",
        "post_attention_norm.weight",
    ),
    (
        "gemma2",
        "pre_feedforward_layernorm.weight",
        "ffn_norm.weight",
    ),
    (
        "gemma2",
        "post_feedforward_layernorm.weight",
        "post_ffw_norm.weight",
    ),
];
const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// The GGUF name of an HF tensor of the Llama graph, if it is one we use.
pub fn gguf_name(hf: &str) -> Option<String> {
    gguf_name_in("llama", hf)
}

/// The GGUF name of an HF tensor in a checkpoint of GGUF architecture
/// `arch`, if it is one we use.
pub fn gguf_name_in(arch: &str, hf: &str) -> Option<String> {
    if let Some((_, g)) = GLOBAL_NAMES.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    // Phi-3's fused tensors replace the separate ones.
    let fused = arch == "phi3"
        && matches!(
            suffix,
            "self_attn.q_proj.weight"
                | "self_attn.k_proj.weight"
                | "self_attn.v_proj.weight"
                | "mlp.gate_proj.weight"
                | "mlp.up_proj.weight"
        );
    let family = FAMILY_NAMES
        .iter()
        .find(|(a, h, _)| *a == arch && *h == suffix)
        .map(|(_, _, g)| *g);
    let plain = LAYER_NAMES
        .iter()
        .find(|(h, _)| *h == suffix && !fused)
        .map(|(_, g)| *g);
    family.or(plain).map(|g| format!("blk.{layer}.{g}"))
}

/// The HF name of a GGUF tensor.
pub fn hf_name(gguf: &str) -> Option<String> {
    if let Some((h, _)) = GLOBAL_NAMES.iter().find(|(_, g)| *g == gguf) {
        return Some(h.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    LAYER_NAMES
        .iter()
        .find(|(_, g)| *g == suffix)
        .map(|(h, _)| format!("model.layers.{layer}.{h}"))
}

/// Reorders the rows of a [rows, row_bytes] matrix between HF's rotate-half
/// head layout and GGUF's interleaved one (`to_gguf`) or back.
pub fn permute_rows(data: &[u8], rows: usize, n_head: usize, to_gguf: bool) -> Result<Vec<u8>> {
    if n_head == 0 || rows % (2 * n_head) != 0 || data.len() % rows.max(1) != 0 {
        return Err(model_err(format!(
            "cannot permute {rows} rows into {n_head} rotary heads"
        )));
    }
    let rb = data.len() / rows;
    let half = rows / n_head / 2;
    let mut out = vec![0u8; data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let hf_row = h * 2 * half + j * half + i;
                let gguf_row = h * 2 * half + i * 2 + j;
                let (src, dst) = if to_gguf {
                    (hf_row, gguf_row)
                } else {
                    (gguf_row, hf_row)
                };
                out[dst * rb..(dst + 1) * rb].copy_from_slice(&data[src * rb..(src + 1) * rb]);
            }
        }
    }
    Ok(out)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| model_err(format!("{}: {e}", path.display())))
}

/// Builds an in-memory GGUF from an HF Llama-family directory, optionally
/// quantizing every matrix to `quantize`.
pub fn gguf_from_hf_dir(dir: &Path, quantize: Option<WeightFormat>) -> Result<GgufFile> {
    let cfg = read_json(&dir.join("config.json"))?;
    let arch = cfg["architectures"][0].as_str().unwrap_or("");
    // The GGUF architecture llama.cpp's converter writes, and whether it
    // permutes Q/K rows to adjacent rotary pairs (only for the Llama graph;
    // the others keep HF's rotate-half rows, which our loader permutes).
    let (garch, permute) = match arch {
        "LlamaForCausalLM" | "MistralForCausalLM" => ("llama", true),
        "Qwen2ForCausalLM" => ("qwen2", false),
        "Qwen3ForCausalLM" => ("qwen3", false),
        "Phi3ForCausalLM" => ("phi3", false),
        "Gemma2ForCausalLM" => ("gemma2", false),
        "Gemma3ForCausalLM" => ("gemma3", false),
        _ => {
            return Err(model_err(format!(
                "{}: architecture `{arch}` is not supported (LlamaForCausalLM, MistralForCausalLM, \
                 Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM)",
                dir.display()
            )))
        }
    };
    let int = |k: &str| -> Result<u64> {
        cfg[k].as_u64().ok_or_else(|| Error::MissingKey {
            key: format!("config.json: {k}"),
        })
    };
    let math = crate::arch::support::check_llama_hf_config(&cfg, garch)?;
    let window = math.window;
    let n_head = int("num_attention_heads")? as usize;
    let n_kv = cfg["num_key_value_heads"].as_u64().unwrap_or(n_head as u64) as usize;
    let head_dim = match cfg["head_dim"].as_u64() {
        Some(h) => h as usize,
        None => int("hidden_size")? as usize / n_head.max(1),
    };
    let theta = math.rope_theta;
    let key = |k: &str| format!("{garch}.{k}");
    let mut w = GgufWriter::new();
    let meta: Vec<(String, MetaValue)> = vec![
        (
            "general.architecture".into(),
            MetaValue::String(garch.into()),
        ),
        (
            "general.name".into(),
            MetaValue::String(
                dir.file_name()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
            ),
        ),
        (
            key("block_count"),
            MetaValue::U32(int("num_hidden_layers")? as u32),
        ),
        (
            key("embedding_length"),
            MetaValue::U32(int("hidden_size")? as u32),
        ),
        (
            key("feed_forward_length"),
            MetaValue::U32(int("intermediate_size")? as u32),
        ),
        (key("attention.head_count"), MetaValue::U32(n_head as u32)),
        (key("attention.head_count_kv"), MetaValue::U32(n_kv as u32)),
        (
            key("context_length"),
            MetaValue::U32(cfg["max_position_embeddings"].as_u64().unwrap_or(2048) as u32),
        ),
        (key("rope.freq_base"), MetaValue::F32(theta as f32)),
        (
            key("attention.layer_norm_rms_epsilon"),
            MetaValue::F32(cfg["rms_norm_eps"].as_f64().unwrap_or(1e-5) as f32),
        ),
    ];
    for (k, v) in meta {
        w.add_metadata(&k, v)?;
    }
    if cfg["head_dim"].as_u64().is_some() {
        w.add_metadata(
            &key("attention.key_length"),
            MetaValue::U32(head_dim as u32),
        )?;
        w.add_metadata(
            &key("attention.value_length"),
            MetaValue::U32(head_dim as u32),
        )?;
    }
    if let Some(t) = math.rope_theta_local {
        w.add_metadata(&key("rope.freq_base_swa"), MetaValue::F32(t as f32))?;
    }
    if let Some(sc) = math.attn_scale {
        w.add_metadata(&key("attention.scale"), MetaValue::F32(sc as f32))?;
    }
    for (name, cap) in [
        ("attn_logit_softcapping", math.softcaps.0),
        ("final_logit_softcapping", math.softcaps.1),
    ] {
        if let Some(c) = cap {
            w.add_metadata(&key(name), MetaValue::F32(c as f32))?;
        }
    }
    if let Some((short, long, attn, orig)) = &math.longrope {
        for (name, f) in [
            ("rope_factors_short.weight", short),
            ("rope_factors_long.weight", long),
        ] {
            let bytes: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.add_tensor(name, &[f.len() as u64], GgmlType::F32, bytes)?;
        }
        w.add_metadata(
            &key("rope.scaling.original_context_length"),
            MetaValue::U32(*orig as u32),
        )?;
        w.add_metadata(
            &key("rope.scaling.attn_factor"),
            MetaValue::F32(*attn as f32),
        )?;
    }
    if let Some(f) = &math.rope_freqs {
        let bytes: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor("rope_freqs.weight", &[f.len() as u64], GgmlType::F32, bytes)?;
    }
    if let Some(win) = window {
        w.add_metadata(
            key("attention.sliding_window"),
            MetaValue::U32(win.min(u32::MAX as u64) as u32),
        )?;
    }
    let mut unexpected = Vec::new();
    // Shards: the index maps tensor -> file; a single file otherwise.
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<String> = if index.is_file() {
        let idx = read_json(&index)?;
        let mut f: Vec<String> = idx["weight_map"]
            .as_object()
            .ok_or_else(|| model_err(format!("{}: no weight_map", index.display())))?
            .values()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        f.sort();
        f.dedup();
        // The index comes with the download: a shard is a file beside it,
        // never a path that leaves the directory or names a device
        // (`file_name` is None for "", "." and "..", and drops directories).
        for name in &f {
            let plain = std::path::Path::new(name)
                .file_name()
                .is_some_and(|n| n == name.as_str());
            if !plain {
                return Err(model_err(format!(
                    "{}: weight_map names the shard {name:?}; shards must be file names in the model directory",
                    index.display()
                )));
            }
            if !dir.join(name).is_file() {
                return Err(model_err(format!(
                    "{}: shard {name:?} is not a file in {}",
                    index.display(),
                    dir.display()
                )));
            }
        }
        f
    } else {
        vec!["model.safetensors".into()]
    };
    let tied = cfg["tie_word_embeddings"].as_bool().unwrap_or(false);
    let mut found = BTreeMap::new();
    for f in &files {
        let path = dir.join(f);
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        // SAFETY: the file is only read; a concurrent writer could change
        // what we read but not break memory safety of the slice we copy from.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io(&path))?;
        let st = safetensors::SafeTensors::deserialize(&map)
            .map_err(|e| model_err(format!("{}: {e}", path.display())))?;
        for (name, view) in st.tensors() {
            let Some(gname) = gguf_name_in(garch, &name) else {
                // Old checkpoints store the rotary frequencies as a buffer:
                // harmless exactly when they are the ones we compute.
                if name.ends_with("rotary_emb.inv_freq")
                    && inv_freq_is_standard(&view, head_dim, theta)
                {
                    continue;
                }
                unexpected.push(name.clone());
                continue;
            };
            if tied && gname == "output.weight" {
                continue;
            }
            let shape: Vec<u64> = view.shape().iter().rev().map(|d| *d as u64).collect();
            let (ty, esize) = match view.dtype() {
                safetensors::Dtype::F32 => (GgmlType::F32, 4),
                safetensors::Dtype::F16 => (GgmlType::F16, 2),
                safetensors::Dtype::BF16 => (GgmlType::BF16, 2),
                other => {
                    return Err(model_err(format!(
                        "{}: tensor `{name}` has dtype {other:?}; f32/f16/bf16 expected",
                        path.display()
                    )))
                }
            };
            let mut data = view.data().to_vec();
            if data.len() != shape.iter().product::<u64>() as usize * esize {
                return Err(model_err(format!(
                    "{}: tensor `{name}` size does not match its shape",
                    path.display()
                )));
            }
            // Rows of a matrix, values of a bias.
            let rows = shape.last().copied().unwrap_or(1) as usize;
            if permute && (gname.ends_with("attn_q.weight") || gname.ends_with("attn_q.bias")) {
                data = permute_rows(&data, rows, n_head, true)?;
            } else if permute
                && (gname.ends_with("attn_k.weight") || gname.ends_with("attn_k.bias"))
            {
                data = permute_rows(&data, rows, n_kv, true)?;
            }
            // Norm vectors are read as f32 by the kernels.
            let (ty, data) = if shape.len() == 1 && ty != GgmlType::F32 {
                let fmt = if ty == GgmlType::F16 {
                    WeightFormat::F16
                } else {
                    WeightFormat::BF16
                };
                let mut v = vec![0f32; shape[0] as usize];
                lottery_engine::formats::dequantize(fmt, &data, &mut v)?;
                (
                    GgmlType::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            } else {
                (ty, data)
            };
            // Gemma's norms scale by (1 + w): stored as 1 + w, as llama.cpp's
            // converter does.
            let gemma = garch == "gemma2" || garch == "gemma3";
            let data = if gemma && shape.len() == 1 && gname.ends_with("norm.weight") {
                data.chunks_exact(4)
                    .flat_map(|b| {
                        (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) + 1.0).to_le_bytes()
                    })
                    .collect()
            } else {
                data
            };
            found.insert(gname.clone(), ());
            w.add_tensor(gname, &shape, ty, data)?;
        }
    }
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(Error::UnexpectedTensors {
            arch: arch.to_string(),
            count: unexpected.len(),
            names: crate::arch::support::list_names(&unexpected),
        });
    }
    if !found.contains_key("token_embd.weight") {
        return Err(Error::MissingTensor {
            name: "model.embed_tokens.weight".into(),
        });
    }
    let g = GgufFile::from_bytes(w.to_bytes())?;
    match quantize {
        None => Ok(g),
        Some(target) => {
            let (w, _) = quantize_gguf(
                &g,
                &QuantizeOptions {
                    target,
                    overrides: vec![],
                },
            )?;
            GgufFile::from_bytes(w.to_bytes())
        }
    }
}

/// Whether a stored `inv_freq` buffer equals 1 / theta^(2i / head_dim).
fn inv_freq_is_standard(
    view: &safetensors::tensor::TensorView,
    head_dim: usize,
    theta: f64,
) -> bool {
    let fmt = match view.dtype() {
        safetensors::Dtype::F32 => WeightFormat::F32,
        safetensors::Dtype::F16 => WeightFormat::F16,
        safetensors::Dtype::BF16 => WeightFormat::BF16,
        _ => return false,
    };
    let n = head_dim / 2;
    if view.shape() != [n] {
        return false;
    }
    let mut v = vec![0f32; n];
    if lottery_engine::formats::dequantize(fmt, view.data(), &mut v).is_err() {
        return false;
    }
    let tol = if fmt == WeightFormat::F32 { 1e-6 } else { 1e-2 };
    v.iter().enumerate().all(|(i, &x)| {
        let want = 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
        ((x as f64 - want) / want).abs() <= tol
    })
}

/// Writes `g` as an HF directory: f32 `model.safetensors` (or `dtype`),
/// `config.json`, and the tokenizer files given.
pub fn write_hf_dir(
    g: &GgufFile,
    dir: &Path,
    dtype: WeightFormat,
    tokenizer_json: &str,
    tokenizer_config: &serde_json::Value,
) -> Result<()> {
    let c = LlamaConfig::from_gguf(g)?;
    if c.rope_halves
        || c.qkv_bias
        || c.qk_norm
        || c.rope_freqs.is_some()
        || c.q_width() != c.d_model
    {
        return Err(Error::Model(format!(
            "convert: writing HF checkpoints covers the plain Llama graph; this file is {}",
            c.family()
        )));
    }
    if let Some(name) = crate::load::sparse::sparse_names(g).first() {
        return Err(Error::Model(format!(
            "`{name}` is stored sparse: an HF checkpoint has no sparse weights; convert the dense source"
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tied = g.tensor("output.weight").is_none();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in g.tensors() {
        let Some(name) = hf_name(&t.name) else {
            continue;
        };
        let x = tensor_f32(g, t)?;
        let shape: Vec<usize> = t.dims.iter().rev().map(|d| *d as usize).collect();
        let out_fmt = if t.dims.len() == 1 {
            WeightFormat::F32
        } else {
            dtype
        };
        let mut bytes = lottery_engine::formats::quantize(out_fmt, &x)?;
        let rows = if shape.len() == 2 { shape[0] } else { 1 };
        if t.name.ends_with("attn_q.weight") {
            bytes = permute_rows(&bytes, rows, c.n_head, false)?;
        } else if t.name.ends_with("attn_k.weight") {
            bytes = permute_rows(&bytes, rows, c.n_kv_head, false)?;
        }
        tensors.push((name, shape, bytes));
    }
    let st_dtype = match dtype {
        WeightFormat::F16 => safetensors::Dtype::F16,
        WeightFormat::BF16 => safetensors::Dtype::BF16,
        WeightFormat::F32 => safetensors::Dtype::F32,
        other => {
            return Err(model_err(format!(
                "convert: safetensors holds f32, f16 or bf16, not {}",
                other.name()
            )))
        }
    };
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            let dt = if s.len() == 1 {
                safetensors::Dtype::F32
            } else {
                st_dtype
            };
            safetensors::tensor::TensorView::new(dt, s.clone(), b).map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| model_err(format!("safetensors: {e}")))?;
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &path)
        .map_err(|e| model_err(format!("{}: {e}", path.display())))?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.d_model,
        "intermediate_size": c.ff,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "vocab_size": c.vocab,
        "max_position_embeddings": c.ctx_train,
        "rope_theta": c.rope_theta,
        "rms_norm_eps": c.eps,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "torch_dtype": match dtype { WeightFormat::F16 => "float16", WeightFormat::BF16 => "bfloat16", _ => "float32" },
    });
    let write = |name: &str, text: String| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io(&p))
    };
    write(
        "config.json",
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )?;
    write("tokenizer.json", tokenizer_json.to_string())?;
    write(
        "tokenizer_config.json",
        serde_json::to_string_pretty(tokenizer_config).unwrap_or_default(),
    )?;
    Ok(())
}
