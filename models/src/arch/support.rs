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

/// Every tensor the Llama forward reads in configuration `c`
/// (`output.weight` is optional: a missing head is tied to the embedding;
/// `rope_freqs.weight` is read whenever present).
pub fn llama_tensor_names(c: &LlamaConfig) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = [
        "token_embd.weight",
        "output_norm.weight",
        "output.weight",
        "rope_freqs.weight",
        "rope_factors_short.weight",
        "rope_factors_long.weight",
    ]
    .iter()
    .map(|n| n.to_string())
    .collect();
    for l in 0..c.n_layer {
        s.extend(c.layer_tensors(l));
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
    let known = llama_tensor_names(c);
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
            // Applied by the Gemma 2 forward only; anywhere else they fall
            // through to the refusal at the end.
            "attn_logit_softcapping" | "final_logit_softcapping" if c.arch == "gemma2" => {}
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
            // Applied: the local layers' rope base (Gemma 3) and a score
            // scale other than 1 / sqrt(head_dim).
            | "rope.freq_base_swa"
            | "attention.scale"
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
                            "values whose head size differs from the keys' {} are not implemented",
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
                // Phi-3's longrope scale on cos/sin, applied with its factors.
                let longrope = g.tensor("rope_factors_long.weight").is_some();
                if !longrope && !matches!(f(value), Some(x) if x == 1.0) {
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

/// What an HF `config.json` says about the math, once checked.
pub struct HfMath {
    /// The sliding window to record, if any.
    pub window: Option<u64>,
    pub rope_theta: f64,
    /// Llama 3's per-frequency divisors, as llama.cpp's converter writes
    /// them into `rope_freqs.weight`.
    pub rope_freqs: Option<Vec<f32>>,
    /// Gemma 3: the local layers' rope base.
    pub rope_theta_local: Option<f64>,
    /// Gemma: the score scale (`query_pre_attn_scalar`^-1/2).
    pub attn_scale: Option<f64>,
    /// Gemma 2: attention and final logit soft-caps.
    pub softcaps: (Option<f64>, Option<f64>),
    /// Phi-3's longrope: short and long factors, the cos/sin scale and the
    /// original context, as llama.cpp's converter writes them.
    pub longrope: Option<(Vec<f32>, Vec<f32>, f64, u64)>,
}

/// Checks the parts of an HF `config.json` that change the math of the
/// Llama graph (and the families it covers). Transformers 5 keeps the rope
/// settings in `rope_parameters`, older files in `rope_theta` and
/// `rope_scaling`; both are read.
pub fn check_llama_hf_config(cfg: &serde_json::Value, arch: &str) -> Result<HfMath> {
    let bad = |key: &str, why: &str| Error::UnsupportedMetadata {
        key: format!("config.json: {key}"),
        value: cfg[key].to_string(),
        why: why.to_string(),
    };
    let gemma = arch == "gemma2" || arch == "gemma3";
    let mut rope_theta_local = None;
    let (rs, rs_key) = if cfg["rope_parameters"].is_object() {
        let rp = &cfg["rope_parameters"];
        // Transformers 5 keys Gemma 3's rope per layer type.
        if gemma && rp.get("full_attention").is_some() {
            let local = &rp["sliding_attention"];
            if local["rope_type"].as_str().unwrap_or("default") != "default" {
                return Err(bad(
                    "rope_parameters",
                    "scaled rope on local layers is not implemented",
                ));
            }
            rope_theta_local = local["rope_theta"].as_f64();
            (&rp["full_attention"], "rope_parameters")
        } else {
            (rp, "rope_parameters")
        }
    } else {
        (&cfg["rope_scaling"], "rope_scaling")
    };
    if arch == "gemma3" && rope_theta_local.is_none() {
        rope_theta_local = Some(cfg["rope_local_base_freq"].as_f64().unwrap_or(10000.0));
    }
    let rope_theta = cfg["rope_theta"]
        .as_f64()
        .or(rs["rope_theta"].as_f64())
        .unwrap_or(10000.0);
    let n_head = cfg["num_attention_heads"].as_u64().unwrap_or(0);
    let head_dim = cfg["head_dim"].as_u64().or_else(|| {
        let d = cfg["hidden_size"].as_u64()?;
        (n_head > 0).then(|| d / n_head)
    });
    let mut rope_freqs = None;
    let mut longrope = None;
    if !rs.is_null() {
        if !rs.is_object() || rs.get("full_attention").is_some() {
            return Err(bad(
                rs_key,
                "per-layer-type rope settings are not implemented",
            ));
        }
        let ty = rs["rope_type"]
            .as_str()
            .or(rs["type"].as_str())
            .unwrap_or("default");
        let factor = rs["factor"].as_f64();
        match ty {
            "default" => {}
            "linear" if factor == Some(1.0) => {}
            "llama3" => {
                let dim = head_dim.ok_or_else(|| bad("head_dim", "no head size"))? as usize;
                rope_freqs = Some(llama3_factors(rs, rope_theta, dim));
            }
            "longrope" if arch == "phi3" => {
                let dim = head_dim.ok_or_else(|| bad("head_dim", "no head size"))? as usize;
                let list = |k: &str| -> Option<Vec<f32>> {
                    let v = rs[k].as_array()?;
                    let f: Vec<f32> = v.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect();
                    (f.len() == dim / 2 && f.len() == v.len()).then_some(f)
                };
                let (Some(short), Some(long)) = (list("short_factor"), list("long_factor")) else {
                    return Err(bad(rs_key, "longrope needs short_factor and long_factor of head_dim / 2 numbers"));
                };
                let orig = rs["original_max_position_embeddings"]
                    .as_u64()
                    .or(cfg["original_max_position_embeddings"].as_u64())
                    .ok_or_else(|| bad(rs_key, "longrope needs original_max_position_embeddings"))?;
                let max_pos = cfg["max_position_embeddings"].as_u64().unwrap_or(orig);
                let scale = max_pos as f64 / orig as f64;
                let attn = rs["attention_factor"].as_f64().unwrap_or(if scale > 1.0 {
                    (1.0 + scale.ln() / (orig as f64).ln()).sqrt()
                } else {
                    1.0
                });
                longrope = Some((short, long, attn, orig));
            }
            _ => {
                return Err(bad(
                    rs_key,
                    "only unscaled and llama3-scaled rotary embeddings are implemented (no linear, dynamic, yarn or longrope scaling)",
                ))
            }
        }
        if let Some(p) = rs["partial_rotary_factor"].as_f64() {
            if p != 1.0 {
                return Err(bad(rs_key, "partial rotary embeddings are not implemented"));
            }
        }
    }
    let act = if gemma { "gelu_pytorch_tanh" } else { "silu" };
    for key in ["hidden_act", "hidden_activation"] {
        if let Some(a) = cfg[key].as_str() {
            if a != act {
                return Err(bad(
                    key,
                    &format!("this family's gated MLP runs `{act}` only"),
                ));
            }
        }
    }
    let mut attn_scale = None;
    if gemma {
        if let Some(q) = cfg["query_pre_attn_scalar"].as_f64() {
            attn_scale = Some(1.0 / q.sqrt());
        }
        if cfg["use_bidirectional_attention"].as_bool() == Some(true) {
            return Err(bad(
                "use_bidirectional_attention",
                "bidirectional attention is not implemented",
            ));
        }
        // llama.cpp fixes the pattern (Gemma 3: every sixth layer global,
        // Gemma 2: every other); a checkpoint with another one is refused
        // rather than run wrong.
        let period = if arch == "gemma3" { 6 } else { 2 };
        if let Some(v) = cfg["layer_types"].as_array() {
            let ok = v.iter().enumerate().all(|(l, t)| {
                let want = if l % period < period - 1 {
                    "sliding_attention"
                } else {
                    "full_attention"
                };
                t.as_str() == Some(want)
            });
            if !ok {
                return Err(bad(
                    "layer_types",
                    "only the family's fixed pattern of local and global layers is implemented",
                ));
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
    if let Some(hd) = cfg["head_dim"].as_u64() {
        if hd == 0 || hd % 2 != 0 {
            return Err(bad(
                "head_dim",
                "a rotary head size must be even and non-zero",
            ));
        }
    }
    // Qwen2 always has Q/K/V biases (no key says so); `attention_bias` in a
    // Llama or Qwen3 config also biases the output projection.
    for key in ["attention_bias", "mlp_bias"] {
        if cfg[key].as_bool() == Some(true) {
            return Err(bad(
                key,
                "biases on the output or MLP projections are not implemented",
            ));
        }
    }
    let softcaps = match arch == "gemma2" {
        true => (
            cfg["attn_logit_softcapping"].as_f64(),
            cfg["final_logit_softcapping"].as_f64(),
        ),
        false => (None, None),
    };
    let refused: &[&str] = if arch == "gemma2" {
        &["num_local_experts", "num_experts"]
    } else {
        &[
            "attn_logit_softcapping",
            "final_logit_softcapping",
            "num_local_experts",
            "num_experts",
        ]
    };
    for &key in refused {
        if !cfg[key].is_null() && cfg[key].as_f64() != Some(0.0) {
            return Err(bad(key, "not implemented by the Llama forward"));
        }
    }
    // Transformers 5 lists each layer's attention; a window that no layer
    // uses is off (Qwen2 configs carry one unless `use_sliding_window`).
    let layers_slide = match cfg["layer_types"].as_array() {
        Some(v) => v.iter().any(|t| t.as_str() != Some("full_attention")),
        None => true,
    };
    let window = cfg["sliding_window"]
        .as_u64()
        .filter(|_| cfg["use_sliding_window"].as_bool() != Some(false) && layers_slide);
    Ok(HfMath {
        window,
        rope_theta,
        rope_freqs,
        rope_theta_local,
        attn_scale,
        softcaps,
        longrope,
    })
}

/// Llama 3.1's rope scaling as per-frequency divisors: high frequencies
/// kept, low ones divided by `factor`, a smooth ramp between (the rule
/// transformers and llama.cpp's converter share).
fn llama3_factors(rs: &serde_json::Value, theta: f64, dim: usize) -> Vec<f32> {
    let factor = rs["factor"].as_f64().unwrap_or(8.0);
    let low = rs["low_freq_factor"].as_f64().unwrap_or(1.0);
    let high = rs["high_freq_factor"].as_f64().unwrap_or(4.0);
    let old = rs["original_max_position_embeddings"]
        .as_f64()
        .unwrap_or(8192.0);
    let (low_wl, high_wl) = (old / low, old / high);
    (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
            let wl = 2.0 * std::f64::consts::PI / freq;
            let f = if wl < high_wl {
                1.0
            } else if wl > low_wl {
                factor
            } else {
                let smooth = (old / wl - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}
