//! Refusing model files we would run wrong.
//!
//! A file of a family we do not implement often *looks* like a Llama: a
//! Qwen2 GGUF has every Llama tensor plus Q/K/V biases, a Llama 3.1 file has
//! every Llama key plus `rope.scaling.type = llama3` and a `rope_freqs`
//! tensor. Loading such a file by the Llama graph would generate fluent
//! garbage with no error. So the loader accepts a file only when every tensor
//! in it is one the forward reads and every `<arch>.*` metadata key is one we
//! understand with a value whose math we implement. Anything else is an
//! error naming the tensors or the key: a false refusal costs a user a bug
//! report, a false acceptance costs them wrong answers they cannot see.

use crate::arch::llama::LlamaConfig;
use crate::load::gguf::{GgufFile, MetaValue};
use crate::{Error, Result};
use std::collections::BTreeSet;

/// How many names an error lists before "and N more".
const LIST: usize = 8;

/// Lists `names` for an error message, truncated after [`LIST`].
pub fn list_names<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<&String> = names.into_iter().collect();
    let mut s = v
        .iter()
        .take(LIST)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > LIST {
        s.push_str(&format!(" and {} more", v.len() - LIST));
    }
    s
}

/// Every tensor the Llama forward reads (`output.weight` is optional: a
/// missing head is tied to the embedding).
pub fn llama_tensor_names(n_layer: usize) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = ["token_embd.weight", "output_norm.weight", "output.weight"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    for l in 0..n_layer {
        for t in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            s.insert(format!("blk.{l}.{t}.weight"));
        }
    }
    s
}

fn unsupported(key: &str, value: &MetaValue, why: &str) -> Error {
    Error::UnsupportedMetadata {
        key: key.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// Checks a GGUF file against what the Llama forward implements; returns the
/// attention window when the file declares a sliding window (the caller caps
/// the context there, where sliding-window attention equals full attention).
pub fn check_llama_gguf(g: &GgufFile, c: &LlamaConfig) -> Result<Option<usize>> {
    let known = llama_tensor_names(c.n_layer);
    let unexpected: Vec<String> = g
        .tensors()
        .iter()
        .filter(|t| {
            let base = crate::load::sparse::companion_of(g, &t.name);
            !known.contains(base.as_ref().unwrap_or(&t.name))
        })
        .map(|t| t.name.clone())
        .collect();
    if !unexpected.is_empty() {
        return Err(Error::UnexpectedTensors {
            arch: c.arch.clone(),
            count: unexpected.len(),
            names: list_names(&unexpected),
        });
    }
    let prefix = format!("{}.", c.arch);
    let f = |v: &MetaValue| v.as_f64();
    let mut window = None;
    let scaling_factor = g.get(&format!("{prefix}rope.scaling.factor")).and_then(f);
    for (key, value) in g.metadata() {
        let Some(suffix) = key.strip_prefix(&prefix) else {
            continue;
        };
        match suffix {
            // Read by LlamaConfig (or harmless: the vocabulary size is the
            // embedding's row count, which the loader checks itself).
            "context_length"
            | "embedding_length"
            | "block_count"
            | "feed_forward_length"
            | "attention.head_count"
            | "attention.head_count_kv"
            | "attention.layer_norm_rms_epsilon"
            | "rope.freq_base"
            | "vocab_size"
            // Only informative while no scaling is applied (checked below).
            | "rope.scaling.original_context_length"
            | "rope.scaling.finetuned" => {}
            "rope.dimension_count" => {
                if value.as_u64() != Some(c.head_dim as u64) {
                    return Err(unsupported(
                        key,
                        value,
                        &format!(
                            "partial rotary embeddings (rotating fewer than the head's {} dimensions) are not implemented",
                            c.head_dim
                        ),
                    ));
                }
            }
            "attention.key_length" | "attention.value_length" => {
                if value.as_u64() != Some(c.head_dim as u64) {
                    return Err(unsupported(
                        key,
                        value,
                        &format!(
                            "heads whose width differs from embedding_length / head_count = {} are not implemented",
                            c.head_dim
                        ),
                    ));
                }
            }
            "expert_count" | "expert_used_count" => {
                if value.as_u64() != Some(0) {
                    return Err(unsupported(key, value, "mixture-of-experts layers are not implemented"));
                }
            }
            "rope.scaling.type" => {
                let ok = match value.as_str() {
                    Some("none") => true,
                    Some("linear") => scaling_factor.is_none_or(|x| x == 1.0 || x == 0.0),
                    _ => false,
                };
                if !ok {
                    return Err(unsupported(
                        key,
                        value,
                        "only unscaled rotary embeddings are implemented (no linear, yarn, longrope or llama3 scaling)",
                    ));
                }
            }
            "rope.scaling.factor" => {
                // llama.cpp applies 1/factor to positions whatever the type
                // says; 0 means "unset".
                if !matches!(f(value), Some(x) if x == 1.0 || x == 0.0) {
                    return Err(unsupported(
                        key,
                        value,
                        "scaled rotary positions are not implemented",
                    ));
                }
            }
            "rope.scaling.attn_factor" => {
                if !matches!(f(value), Some(x) if x == 1.0) {
                    return Err(unsupported(key, value, "attention scaling (YaRN) is not implemented"));
                }
            }
            "attention.sliding_window" => match value.as_u64() {
                Some(0) => {}
                Some(w) => window = Some(w as usize),
                None => return Err(unsupported(key, value, "expected a window length")),
            },
            _ => {
                return Err(unsupported(
                    key,
                    value,
                    &format!(
                        "this key is not understood by the `{}` forward and may change the math",
                        c.arch
                    ),
                ))
            }
        }
    }
    Ok(window)
}

/// Checks the parts of an HF `config.json` that change the math of a Llama
/// forward; `window` is the sliding window to record, if any.
pub fn check_llama_hf_config(cfg: &serde_json::Value) -> Result<Option<u64>> {
    let bad = |key: &str, why: &str| Error::UnsupportedMetadata {
        key: format!("config.json: {key}"),
        value: cfg[key].to_string(),
        why: why.to_string(),
    };
    let rs = &cfg["rope_scaling"];
    if !rs.is_null() {
        let ty = rs["rope_type"]
            .as_str()
            .or(rs["type"].as_str())
            .unwrap_or("");
        let factor = rs["factor"].as_f64();
        let ok = ty == "default" || (ty == "linear" && factor == Some(1.0));
        if !ok {
            return Err(bad(
                "rope_scaling",
                "only unscaled rotary embeddings are implemented (no linear, dynamic, yarn, longrope or llama3 scaling)",
            ));
        }
    }
    for key in ["hidden_act", "hidden_activation"] {
        if let Some(a) = cfg[key].as_str() {
            if a != "silu" {
                return Err(bad(key, "only the SiLU-gated MLP (SwiGLU) is implemented"));
            }
        }
    }
    if let Some(p) = cfg["partial_rotary_factor"].as_f64() {
        if p != 1.0 {
            return Err(bad(
                "partial_rotary_factor",
                "partial rotary embeddings are not implemented",
            ));
        }
    }
    if let (Some(hd), Some(d), Some(h)) = (
        cfg["head_dim"].as_u64(),
        cfg["hidden_size"].as_u64(),
        cfg["num_attention_heads"].as_u64(),
    ) {
        if h == 0 || hd * h != d {
            return Err(bad(
                "head_dim",
                "heads whose width differs from hidden_size / num_attention_heads are not implemented",
            ));
        }
    }
    for key in ["attention_bias", "mlp_bias"] {
        if cfg[key].as_bool() == Some(true) {
            return Err(bad(key, "projection biases are not implemented"));
        }
    }
    for key in [
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "num_local_experts",
        "num_experts",
    ] {
        if !cfg[key].is_null() && cfg[key].as_f64() != Some(0.0) {
            return Err(bad(key, "not implemented by the Llama forward"));
        }
    }
    let window = cfg["sliding_window"].as_u64().filter(|_| {
        // Qwen2-style configs carry a window that is off unless enabled.
        cfg["use_sliding_window"].as_bool() != Some(false)
    });
    Ok(window)
}
