//! The Llama family (SmolLM2, Llama, Qwen2-style without biases): config
//! from GGUF metadata, weights on the GPU, and the dispatch lists of a
//! prefill and a decode step.

use crate::load::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::load::sparse;
use crate::{Error, Result};
use lottery_engine::formats::{self, GpuWeight, SparseTensor};
use lottery_engine::gpu::{Dispatch, Gpu, StepBuffer, Tensor};
use lottery_engine::kv::{KvCache, KvDtype, KvPolicy};
use lottery_engine::ops::{self, AttnShape, MatvecOpts, SampleUniform};
use lottery_engine::WeightFormat;

/// Hyper-parameters read from `llama.*` (or `<arch>.*`) metadata.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub arch: String,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ff: usize,
    pub vocab: usize,
    pub ctx_train: usize,
    pub rope_theta: f32,
    pub eps: f32,
    /// A sliding attention window declared by the file (every layer
    /// attends to its last `w` positions): sessions past it run the cache
    /// as a `sink-window:0,w` ring, which is exactly that attention.
    pub attn_window: Option<usize>,
    /// The file's Q and K rows rotate the two halves of each head (HF's
    /// layout, kept by llama.cpp for qwen2, qwen3 and phi3). Our kernels
    /// rotate adjacent pairs, so those rows, their biases and their norm
    /// weights are permuted once at load ([`to_pair_rows`]); attention
    /// scores do not depend on the order of a head's dimensions.
    pub rope_halves: bool,
    /// Q/K/V projections carry biases (`attn_{q,k,v}.bias`: Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm of queries and keys before rotation
    /// (`attn_{q,k}_norm.weight`: Qwen3).
    pub qk_norm: bool,
    /// Q, K and V stored as one tensor `attn_qkv` (Phi-3).
    pub fused_qkv: bool,
    /// Gate and up stored as one tensor `ffn_up` of 2 ff rows, gate first (Phi-3).
    pub fused_gate_up: bool,
    /// Per-frequency divisors of the rotary angle (`rope_freqs.weight`:
    /// Llama 3.1's frequency-dependent rope scaling).
    pub rope_freqs: Option<Vec<f32>>,
    /// Embeddings multiplied by this before the first layer (Gemma: sqrt(d)).
    pub embed_scale: Option<f32>,
    /// GeGLU (tanh GELU) instead of SwiGLU (Gemma).
    pub geglu: bool,
    /// RMSNorm on the attention and the feed-forward outputs before each
    /// residual add (`post_attention_norm`, `post_ffw_norm`: Gemma 2/3).
    pub post_norms: bool,
    /// Attention score scale when not 1 / sqrt(head_dim)
    /// (`<arch>.attention.scale`: Gemma's `query_pre_attn_scalar`).
    pub attn_scale: Option<f32>,
    /// Layers that attend within their own sliding window of `local_window`
    /// positions, the others globally (Gemma 3: five local to one global).
    pub local_layers: Vec<bool>,
    pub local_window: usize,
    /// The rope base of the local layers, when it differs (`rope.freq_base_swa`).
    pub rope_theta_local: Option<f32>,
    /// Attention scores soft-capped to c tanh(s / c) (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Logits soft-capped the same way (Gemma 2).
    pub final_softcap: Option<f32>,
    /// Phi-3's longrope (128k models).
    pub longrope: Option<LongRope>,
}

/// Phi-3's longrope scaling: per-frequency divisors for contexts up to the
/// original one and past it, and a scale on cos/sin.
#[derive(Clone, Debug)]
pub struct LongRope {
    pub short: Vec<f32>,
    pub long: Vec<f32>,
    pub orig: usize,
    pub attn_factor: f32,
}

impl LlamaConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<LlamaConfig> {
        let arch = g.architecture()?.to_string();
        if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
            return Err(Error::Model(format!(
                "general.architecture = `{arch}` is not supported yet (supported: {})",
                SUPPORTED_ARCHS.join(", ")
            )));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let d_model = g.get_u32(&k("embedding_length"))? as usize;
        let n_head = g.get_u32(&k("attention.head_count"))? as usize;
        let n_kv_head = g
            .opt_u32(&k("attention.head_count_kv"))?
            .unwrap_or(n_head as u32) as usize;
        let (embd_cols, embd_rows) = weight_dims(g, "token_embd.weight")?;
        let (block_key, embd_key) = (k("block_count"), k("embedding_length"));
        let gemma = arch == "gemma2" || arch == "gemma3";
        let cfg = LlamaConfig {
            n_layer: g.get_u32(&k("block_count"))? as usize,
            d_model,
            n_head,
            n_kv_head,
            head_dim: match g.opt_u32(&k("attention.key_length"))? {
                Some(hd) => hd as usize,
                None if n_head > 0 => d_model / n_head,
                None => 0,
            },
            ff: g.get_u32(&k("feed_forward_length"))? as usize,
            vocab: embd_rows,
            ctx_train: g.opt_u32(&k("context_length"))?.unwrap_or(2048) as usize,
            rope_theta: g.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0),
            eps: g
                .opt_f32(&k("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope_halves: matches!(
                arch.as_str(),
                "qwen2" | "qwen3" | "phi3" | "gemma2" | "gemma3"
            ),
            qkv_bias: has_weight(g, "blk.0.attn_q.bias"),
            qk_norm: g.tensor("blk.0.attn_q_norm.weight").is_some(),
            fused_qkv: has_weight(g, "blk.0.attn_qkv.weight"),
            fused_gate_up: arch == "phi3" && !has_weight(g, "blk.0.ffn_gate.weight"),
            rope_freqs: None,
            embed_scale: gemma.then(|| (d_model as f32).sqrt()),
            geglu: gemma,
            post_norms: gemma,
            attn_softcap: g
                .opt_f32(&k("attn_logit_softcapping"))?
                .filter(|c| *c > 0.0),
            final_softcap: g
                .opt_f32(&k("final_logit_softcapping"))?
                .filter(|c| *c > 0.0),
            longrope: None,
            attn_scale: g.opt_f32(&k("attention.scale"))?,
            local_layers: vec![],
            local_window: 0,
            rope_theta_local: g.opt_f32(&k("rope.freq_base_swa"))?,
            arch: arch.clone(),
            attn_window: None,
        };
        if cfg.n_head == 0
            || cfg.n_kv_head == 0
            || !cfg.n_head.is_multiple_of(cfg.n_kv_head)
            || cfg.head_dim == 0
            || !cfg.head_dim.is_multiple_of(2)
        {
            return Err(Error::Model(format!(
                "inconsistent attention shape: embedding_length {} / head_count {} / head_count_kv {} / head size {}",
                cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.head_dim
            )));
        }
        // Counts from the file are checked against what the file holds
        // before anything is sized by them.
        if cfg.n_layer == 0 {
            return Err(Error::Model(format!(
                "{block_key} = 0: a model needs layers"
            )));
        }
        let per_layer = cfg.layer_tensors(0).len();
        if cfg.n_layer.saturating_mul(per_layer) > g.tensors().len() {
            // Named from the first layers: the file is short, so a missing
            // tensor turns up within a few layers whatever block_count says.
            let mut missing = Vec::new();
            for l in 0..cfg.n_layer {
                missing.extend(
                    cfg.layer_tensors(l)
                        .into_iter()
                        .filter(|n| !has_weight(g, n)),
                );
                if missing.len() > 8 {
                    break;
                }
            }
            return Err(Error::Model(format!(
                "{block_key} = {} but the file holds {} tensors (each layer has {per_layer}); missing: {}",
                cfg.n_layer,
                g.tensors().len(),
                super::support::list_names(&missing)
            )));
        }
        if cfg.d_model != embd_cols {
            return Err(Error::Model(format!(
                "{embd_key} = {} but token_embd.weight rows hold {} values",
                cfg.d_model, embd_cols
            )));
        }
        let mut cfg = cfg;
        cfg.attn_window = super::support::check_llama_gguf(g, &cfg)?;
        if gemma {
            // llama.cpp's Gemma rules: Gemma 3 has every sixth layer global
            // and the others local to the declared window, Gemma 2 every
            // other one (the first local); the score scale is 1/sqrt(head)
            // except for the 27B models (62 and 46 layers), 1/sqrt(d / heads).
            let (period, big) = if cfg.arch == "gemma3" {
                (6, 62)
            } else {
                (2, 46)
            };
            if let Some(w) = cfg.attn_window.take() {
                cfg.local_window = w;
                cfg.local_layers = (0..cfg.n_layer).map(|l| l % period < period - 1).collect();
            }
            if cfg.attn_scale.is_none() && cfg.n_layer == big {
                cfg.attn_scale = Some(1.0 / ((cfg.d_model / cfg.n_head) as f32).sqrt());
            }
        }
        let factors = |name: &str| -> Result<Option<Vec<f32>>> {
            let Some(t) = g.tensor(name) else {
                return Ok(None);
            };
            let f = tensor_f32(g, t)?;
            if f.len() != cfg.head_dim / 2 {
                return Err(Error::Model(format!(
                    "{name}: expected {} factors (head size / 2), got {} values",
                    cfg.head_dim / 2,
                    f.len()
                )));
            }
            if let Some(i) = f.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
                return Err(Error::Model(format!(
                    "{name}[{i}] = {}: a rotary factor must be a positive number",
                    f[i]
                )));
            }
            Ok(Some(f))
        };
        cfg.rope_freqs = factors("rope_freqs.weight")?;
        // Phi-3's longrope: short factors up to the original context, long
        // ones past it (llama.cpp picks by the session's context), and the
        // cos/sin scaled by `rope.scaling.attn_factor`.
        match (
            factors("rope_factors_short.weight")?,
            factors("rope_factors_long.weight")?,
        ) {
            (Some(short), Some(long)) => {
                let key = k("rope.scaling.original_context_length");
                let orig = g.opt_u32(&key)?.ok_or(Error::MissingKey { key })? as usize;
                cfg.longrope = Some(LongRope {
                    short,
                    long,
                    orig,
                    attn_factor: g.opt_f32(&k("rope.scaling.attn_factor"))?.unwrap_or(1.0),
                });
            }
            (None, None) => {}
            _ => {
                return Err(Error::Model(
                    "rope_factors_short.weight and rope_factors_long.weight come as a pair".into(),
                ))
            }
        }
        Ok(cfg)
    }

    /// The per-frequency divisors and the cos/sin scale of a session
    /// holding `ctx` positions.
    pub fn rope_factors(&self, ctx: usize) -> (Option<&[f32]>, f32) {
        match &self.longrope {
            Some(r) if ctx > r.orig => (Some(&r.long), r.attn_factor),
            Some(r) => (Some(&r.short), r.attn_factor),
            None => (self.rope_freqs.as_deref(), 1.0),
        }
    }

    /// Width of the attention output (n_head * head_dim; differs from
    /// d_model in Qwen3).
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the key (and value) projection.
    pub fn kv_width(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// The tensors layer `l` of this configuration reads, without the
    /// `.weight` / `.bias` suffix's meaning lost: full names.
    pub fn layer_tensors(&self, l: usize) -> Vec<String> {
        let n = |s: &str| format!("blk.{l}.{s}");
        let mut v = vec![
            n("attn_norm.weight"),
            n("attn_output.weight"),
            n("ffn_norm.weight"),
            n("ffn_up.weight"),
            n("ffn_down.weight"),
        ];
        if self.fused_qkv {
            v.push(n("attn_qkv.weight"));
        } else {
            v.extend([n("attn_q.weight"), n("attn_k.weight"), n("attn_v.weight")]);
        }
        if !self.fused_gate_up {
            v.push(n("ffn_gate.weight"));
        }
        if self.qkv_bias {
            v.extend([n("attn_q.bias"), n("attn_k.bias"), n("attn_v.bias")]);
        }
        if self.qk_norm {
            v.extend([n("attn_q_norm.weight"), n("attn_k_norm.weight")]);
        }
        if self.post_norms {
            v.extend([n("post_attention_norm.weight"), n("post_ffw_norm.weight")]);
        }
        v
    }

    /// Layer `l`'s attention settings beyond the step's.
    pub fn layer_attn(&self, l: usize) -> ops::LayerAttn {
        let local = self.local_layers.get(l).copied().unwrap_or(false);
        ops::LayerAttn {
            all_slots: false,
            pages_selected: false,
            window: if local { self.local_window as u32 } else { 0 },
            scale: self.attn_scale,
            softcap: self.attn_softcap.unwrap_or(0.0),
        }
    }

    /// Whether layer `l` uses the local rope base.
    pub fn local_rope(&self, l: usize) -> bool {
        self.rope_theta_local.is_some() && self.local_layers.get(l).copied().unwrap_or(false)
    }

    /// What this configuration adds to the plain Llama graph, for `lottery info`.
    pub fn family(&self) -> String {
        let mut parts = Vec::new();
        if self.qkv_bias {
            parts.push("Q/K/V biases".to_string());
        }
        if self.qk_norm {
            parts.push("per-head Q/K RMSNorm".to_string());
        }
        if self.q_width() != self.d_model {
            parts.push(format!(
                "head size {} (attention width {})",
                self.head_dim,
                self.q_width()
            ));
        }
        if self.fused_qkv || self.fused_gate_up {
            parts.push("fused QKV and gate/up tensors".to_string());
        }
        if self.rope_freqs.is_some() {
            parts.push("llama3 rope scaling (rope_freqs)".to_string());
        }
        if let Some(r) = &self.longrope {
            parts.push(format!(
                "longrope scaling (long factors past {} positions)",
                r.orig
            ));
        }
        if self.rope_halves {
            parts.push("rotate-half rope (rows permuted at load)".to_string());
        }
        if self.geglu {
            parts.push("GeGLU".to_string());
        }
        if self.embed_scale.is_some() {
            parts.push("scaled embeddings".to_string());
        }
        if self.post_norms {
            parts.push("post-attention and post-feed-forward norms".to_string());
        }
        if let Some(s) = self.attn_scale {
            parts.push(format!("attention scale {s}"));
        }
        if let Some(c) = self.attn_softcap {
            parts.push(format!("attention soft-cap {c}"));
        }
        if let Some(c) = self.final_softcap {
            parts.push(format!("logit soft-cap {c}"));
        }
        if !self.local_layers.is_empty() {
            let n = self.local_layers.iter().filter(|x| **x).count();
            parts.push(format!(
                "{n} of {} layers local to {} positions{}",
                self.n_layer,
                self.local_window,
                match self.rope_theta_local {
                    Some(t) => format!(" (rope base {t})"),
                    None => String::new(),
                }
            ));
        }
        if let Some(w) = self.attn_window {
            parts.push(format!("sliding-window attention over {w} positions"));
        }
        if parts.is_empty() {
            format!("{}: the Llama graph", self.arch)
        } else {
            format!("{}: the Llama graph with {}", self.arch, parts.join(", "))
        }
    }
}

/// Values of `general.architecture` the Llama graph runs.
pub const SUPPORTED_ARCHS: [&str; 8] = [
    "llama", "mistral", "smollm", "qwen2", "qwen3", "phi3", "gemma2", "gemma3",
];

/// Permutes the rows of `data` ([rows, row bytes]) from the rotate-half
/// layout to adjacent pairs, in each `(first row, heads)` segment of
/// `heads * head_dim` rows; other rows are left as they are.
pub fn to_pair_rows(
    data: &mut [u8],
    rows: usize,
    head_dim: usize,
    segments: &[(usize, usize)],
) -> Result<()> {
    if rows == 0 || !data.len().is_multiple_of(rows) {
        return Err(Error::Model(format!(
            "cannot split {} bytes into {rows} rows",
            data.len()
        )));
    }
    let rb = data.len() / rows;
    for &(first, heads) in segments {
        let end = first + heads * head_dim;
        if end > rows {
            return Err(Error::Model(format!(
                "rotary rows {first}..{end} exceed the tensor's {rows} rows"
            )));
        }
        let seg = &mut data[first * rb..end * rb];
        let p = crate::load::hf::permute_rows(seg, heads * head_dim, heads, true)?;
        seg.copy_from_slice(&p);
    }
    Ok(())
}

/// [`to_pair_rows`] for an f32 matrix or vector of `row_len` values a row.
pub fn to_pair_rows_f32(
    v: &mut [f32],
    row_len: usize,
    head_dim: usize,
    segments: &[(usize, usize)],
) -> Result<()> {
    let mut bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    to_pair_rows(&mut bytes, v.len() / row_len.max(1), head_dim, segments)?;
    for (x, b) in v.iter_mut().zip(bytes.chunks_exact(4)) {
        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// The weight format our kernels use for a GGUF tensor type.
pub fn weight_format(name: &str, t: GgmlType) -> Result<WeightFormat> {
    WeightFormat::from_ggml_type(t.id()).ok_or_else(|| Error::UnsupportedTensorType {
        name: name.to_string(),
        ggml_type: t.id(),
    })
}

fn check_dims<'a>(g: &'a GgufFile, name: &str, cols: usize, rows: usize) -> Result<&'a TensorInfo> {
    let t = g.require_tensor(name)?;
    if t.row_len() as usize != cols || t.n_rows() as usize != rows {
        return Err(Error::ShapeMismatch {
            name: name.to_string(),
            expected: format!("[{cols}, {rows}]"),
            got: format!("{:?}", t.dims),
        });
    }
    Ok(t)
}

/// A weight as the file stores it.
pub enum StoredWeight<'a> {
    Dense(&'a TensorInfo),
    Sparse(SparseTensor),
}

/// Whether the file holds weight `name`, dense or sparse.
pub fn has_weight(g: &GgufFile, name: &str) -> bool {
    g.tensor(name).is_some() || sparse::is_sparse(g, name)
}

/// (row length, rows) of weight `name`, dense or sparse.
pub fn weight_dims(g: &GgufFile, name: &str) -> Result<(usize, usize)> {
    if sparse::is_sparse(g, name) {
        let m = g.require_tensor(&format!("{name}{}", sparse::MASK_SUFFIX))?;
        let d = |i: usize| m.dims.get(i).copied().unwrap_or(1) as usize;
        return Ok((d(0).saturating_mul(32), d(1)));
    }
    let t = g.require_tensor(name)?;
    Ok((t.row_len() as usize, t.n_rows() as usize))
}

/// Weight `name`, checked to be [rows, cols].
pub fn stored_weight<'a>(
    g: &'a GgufFile,
    name: &str,
    cols: usize,
    rows: usize,
) -> Result<StoredWeight<'a>> {
    if let Some(t) = sparse::read_sparse(g, name)? {
        if g.tensor(name).is_some() {
            return Err(Error::Model(format!(
                "weight `{name}` is stored both dense and sparse"
            )));
        }
        if t.k != cols || t.n != rows {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: format!("[{cols}, {rows}]"),
                got: format!("[{}, {}] (sparse)", t.k, t.n),
            });
        }
        return Ok(StoredWeight::Sparse(t));
    }
    Ok(StoredWeight::Dense(check_dims(g, name, cols, rows)?))
}

/// Weight `name` decoded to f32 on the CPU, dense or sparse.
pub fn weight_f32(g: &GgufFile, name: &str) -> Result<Vec<f32>> {
    match sparse::read_sparse(g, name)? {
        Some(t) => t
            .to_dense()
            .map_err(|e| Error::Model(format!("sparse tensor `{name}`: {e}"))),
        None => tensor_f32(g, g.require_tensor(name)?),
    }
}

/// Dequantizes any supported tensor to f32 on the CPU.
pub fn tensor_f32(g: &GgufFile, t: &TensorInfo) -> Result<Vec<f32>> {
    let fmt = weight_format(&t.name, t.ggml_type)?;
    let mut out = vec![0f32; t.n_elements() as usize];
    formats::dequantize(fmt, g.tensor_data(t)?, &mut out)
        .map_err(|e| Error::Model(format!("tensor `{}`: {e}", t.name)))?;
    Ok(out)
}

/// One tensor of a fused upload: `rows` rows, and the `(first row, heads)`
/// segments whose rotary rows are permuted to adjacent pairs.
pub struct Part {
    pub name: String,
    pub rows: usize,
    pub rotary: Vec<(usize, usize)>,
}

impl Part {
    fn plain(name: String, rows: usize) -> Part {
        Part {
            name,
            rows,
            rotary: vec![],
        }
    }
}

impl LlamaConfig {
    /// The parts of layer `l`'s fused Q/K/V projection, in row order.
    pub fn qkv_parts(&self, l: usize, suffix: &str) -> Vec<Part> {
        let (nh, nkv, hd) = (self.n_head, self.n_kv_head, self.head_dim);
        let rot = |segs: Vec<(usize, usize)>| if self.rope_halves { segs } else { vec![] };
        let n = |s: &str| format!("blk.{l}.{s}.{suffix}");
        if self.fused_qkv {
            return vec![Part {
                name: n("attn_qkv"),
                rows: (nh + 2 * nkv) * hd,
                rotary: rot(vec![(0, nh), (nh * hd, nkv)]),
            }];
        }
        vec![
            Part {
                name: n("attn_q"),
                rows: nh * hd,
                rotary: rot(vec![(0, nh)]),
            },
            Part {
                name: n("attn_k"),
                rows: nkv * hd,
                rotary: rot(vec![(0, nkv)]),
            },
            Part::plain(n("attn_v"), nkv * hd),
        ]
    }

    /// The parts of layer `l`'s fused gate/up projection.
    pub fn gate_up_parts(&self, l: usize) -> Vec<Part> {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        if self.fused_gate_up {
            return vec![Part::plain(n("ffn_up"), 2 * self.ff)];
        }
        vec![
            Part::plain(n("ffn_gate"), self.ff),
            Part::plain(n("ffn_up"), self.ff),
        ]
    }
}

/// Uploads the row-concatenation of `parts` ([rows_i, cols] each) as one
/// weight, so Q/K/V (or gate/up) run as one projection. Mixed formats fall
/// back to f32.
fn fused(
    gpu: &Gpu,
    g: &GgufFile,
    label: &str,
    parts: &[Part],
    cols: usize,
    head_dim: usize,
) -> Result<GpuWeight> {
    let stored = parts
        .iter()
        .map(|p| stored_weight(g, &p.name, cols, p.rows))
        .collect::<Result<Vec<_>>>()?;
    let rows: usize = parts.iter().map(|p| p.rows).sum();
    let sparse: Vec<&SparseTensor> = stored
        .iter()
        .filter_map(|s| match s {
            StoredWeight::Sparse(t) => Some(t),
            StoredWeight::Dense(_) => None,
        })
        .collect();
    if let Some(p) = parts.iter().find(|p| !p.rotary.is_empty()) {
        if !sparse.is_empty() {
            return Err(Error::Model(format!(
                "`{}`: sparse Q/K weights are not supported in a family whose rows rotate halves ({label})",
                p.name
            )));
        }
    }
    if sparse.len() == stored.len() && sparse.iter().all(|t| t.format == sparse[0].format) {
        let t = SparseTensor::concat_rows(&sparse)?;
        return Ok(GpuWeight::upload_sparse(gpu, label, &t)?);
    }
    let dense: Vec<&TensorInfo> = stored
        .iter()
        .filter_map(|s| match s {
            StoredWeight::Dense(t) => Some(*t),
            StoredWeight::Sparse(_) => None,
        })
        .collect();
    let fmt = dense
        .first()
        .map(|t| (weight_format(&t.name, t.ggml_type), t.ggml_type));
    let mut bytes = Vec::new();
    let fmt = match fmt {
        Some((Ok(f), first))
            if dense.len() == stored.len()
                && dense.iter().all(|t| t.ggml_type == first)
                && cols.is_multiple_of(f.row_multiple()) =>
        {
            for (t, p) in dense.iter().zip(parts) {
                let mut b = g.tensor_data(t)?.to_vec();
                to_pair_rows(&mut b, p.rows, head_dim, &p.rotary)?;
                bytes.extend_from_slice(&b);
            }
            f
        }
        _ => {
            // Mixed formats (or sparse beside dense) run as one f32 weight.
            for p in parts {
                let mut v = weight_f32(g, &p.name)?;
                to_pair_rows_f32(&mut v, cols, head_dim, &p.rotary)?;
                bytes.extend(v.iter().flat_map(|v| v.to_le_bytes()));
            }
            WeightFormat::F32
        }
    };
    Ok(GpuWeight::upload(gpu, label, fmt, &bytes, rows, cols)?)
}

/// The row-concatenation of `parts` decoded to f32, rotary rows permuted as
/// the GPU upload permutes them (the CPU reference's weights).
pub fn parts_f32(g: &GgufFile, parts: &[Part], cols: usize, head_dim: usize) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for p in parts {
        let mut v = weight_f32(g, &p.name)?;
        if v.len() != p.rows * cols {
            return Err(Error::ShapeMismatch {
                name: p.name.clone(),
                expected: format!("[{cols}, {}]", p.rows),
                got: format!("{} values", v.len()),
            });
        }
        to_pair_rows_f32(&mut v, cols, head_dim, &p.rotary)?;
        out.extend(v);
    }
    Ok(out)
}

/// The vectors `parts` name (biases, norm weights), concatenated in f32 with
/// their rotary rows permuted.
pub fn vectors_f32(g: &GgufFile, parts: &[Part], head_dim: usize) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for p in parts {
        let t = check_dims(g, &p.name, p.rows, 1)?;
        let mut v = tensor_f32(g, t)?;
        to_pair_rows_f32(&mut v, 1, head_dim, &p.rotary)?;
        out.extend(v);
    }
    Ok(out)
}

/// The largest single GPU buffer the model's weights need (fused Q/K/V and
/// gate/up included), so a device can be asked for a larger per-binding limit
/// than WebGPU's default only when the model needs it.
pub fn max_binding_bytes(g: &GgufFile) -> Result<u64> {
    let size = |name: &str| -> u64 {
        if let Ok(Some(t)) = sparse::read_sparse(g, name) {
            return t.gpu_bytes() as u64;
        }
        g.tensor(name)
            .map(|t| match weight_format(name, t.ggml_type) {
                Ok(f) => f.gpu_bytes(t.n_elements() as usize) as u64,
                Err(_) => t.n_elements() * 4,
            })
            .unwrap_or(0)
    };
    let mut max = size("token_embd.weight").max(size("output.weight"));
    let mut l = 0;
    while has_weight(g, &format!("blk.{l}.attn_q.weight"))
        || has_weight(g, &format!("blk.{l}.attn_qkv.weight"))
    {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        max = max
            .max(
                size(&n("attn_q")) + size(&n("attn_k")) + size(&n("attn_v")) + size(&n("attn_qkv")),
            )
            .max(size(&n("ffn_gate")) + size(&n("ffn_up")))
            .max(size(&n("ffn_down")))
            .max(size(&n("attn_output")));
        l += 1;
    }
    Ok(max)
}

pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub wqkv: GpuWeight,
    /// Q/K/V biases, concatenated like `wqkv`'s rows.
    pub qkv_bias: Option<Tensor>,
    /// The q_norm weight then the k_norm weight, [2 head_dim].
    pub qk_norm: Option<Tensor>,
    /// Norms on the attention and feed-forward outputs (Gemma).
    pub post_norms: Option<(Tensor, Tensor)>,
    pub wo: GpuWeight,
    pub ffn_norm: Tensor,
    pub w_gate_up: GpuWeight,
    pub w_down: GpuWeight,
}

pub struct LlamaWeights {
    pub embed: GpuWeight,
    pub layers: Vec<LayerWeights>,
    pub out_norm: Tensor,
    /// `None`: tied to the embedding.
    pub lm_head: Option<GpuWeight>,
}

impl LlamaWeights {
    /// Uploads every weight; `progress(done, total)` is called per tensor group.
    pub fn load(
        gpu: &Gpu,
        g: &GgufFile,
        c: &LlamaConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<LlamaWeights> {
        let total = c.n_layer + 2;
        let embed = match stored_weight(g, "token_embd.weight", c.d_model, c.vocab)? {
            StoredWeight::Sparse(t) => GpuWeight::upload_sparse(gpu, "token_embd.weight", &t)?,
            StoredWeight::Dense(embd) => GpuWeight::upload(
                gpu,
                "token_embd.weight",
                weight_format(&embd.name, embd.ggml_type)?,
                g.tensor_data(embd)?,
                c.vocab,
                c.d_model,
            )?,
        };
        progress(1, total);
        let norm = |name: &str| -> Result<Tensor> {
            let t = check_dims(g, name, c.d_model, 1)?;
            Ok(gpu.upload(name, &tensor_f32(g, t)?)?)
        };
        let hd = c.head_dim;
        let mut layers = Vec::with_capacity(c.n_layer);
        for l in 0..c.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let single = |s: &str, cols: usize, rows: usize| {
                fused(gpu, g, &n(s), &[Part::plain(n(s), rows)], cols, hd)
            };
            let qkv_bias = match c.qkv_bias {
                true => Some(gpu.upload(
                    &format!("blk.{l}.attn_qkv.bias"),
                    &vectors_f32(g, &c.qkv_parts(l, "bias"), hd)?,
                )?),
                false => None,
            };
            let qk_norm = match c.qk_norm {
                true => {
                    let part = |s: &str| Part {
                        name: n(s),
                        rows: hd,
                        rotary: if c.rope_halves { vec![(0, 1)] } else { vec![] },
                    };
                    let v = vectors_f32(g, &[part("attn_q_norm"), part("attn_k_norm")], hd)?;
                    Some(gpu.upload(&format!("blk.{l}.attn_qk_norm"), &v)?)
                }
                false => None,
            };
            layers.push(LayerWeights {
                attn_norm: norm(&n("attn_norm"))?,
                wqkv: fused(
                    gpu,
                    g,
                    &format!("blk.{l}.attn_qkv"),
                    &c.qkv_parts(l, "weight"),
                    c.d_model,
                    hd,
                )?,
                qkv_bias,
                qk_norm,
                post_norms: match c.post_norms {
                    true => Some((norm(&n("post_attention_norm"))?, norm(&n("post_ffw_norm"))?)),
                    false => None,
                },
                wo: single("attn_output", c.q_width(), c.d_model)?,
                ffn_norm: norm(&n("ffn_norm"))?,
                w_gate_up: fused(
                    gpu,
                    g,
                    &format!("blk.{l}.ffn_gate_up"),
                    &c.gate_up_parts(l),
                    c.d_model,
                    hd,
                )?,
                w_down: single("ffn_down", c.ff, c.d_model)?,
            });
            progress(l + 2, total);
        }
        let out_norm = norm("output_norm.weight")?;
        let lm_head = match has_weight(g, "output.weight") {
            true => Some(fused(
                gpu,
                g,
                "output.weight",
                &[Part::plain("output.weight".to_string(), c.vocab)],
                c.d_model,
                hd,
            )?),
            false => None,
        };
        progress(total, total);
        Ok(LlamaWeights {
            embed,
            layers,
            out_norm,
            lm_head,
        })
    }

    pub fn lm_head(&self) -> &GpuWeight {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes read from weights by one decode step (all matrices once, the
    /// embedding row is negligible unless the head is tied).
    pub fn decode_bytes(&self) -> u64 {
        let mut b = self.lm_head().bytes() + self.out_norm.bytes;
        for l in &self.layers {
            b += l.wqkv.bytes()
                + l.wo.bytes()
                + l.w_gate_up.bytes()
                + l.w_down.bytes()
                + l.attn_norm.bytes
                + l.ffn_norm.bytes;
        }
        b
    }
}

/// Activation buffers of one session, sized for `max_batch` tokens.
pub struct Activations {
    pub tokens: Tensor,
    pub x: Tensor,
    pub xn: Tensor,
    pub qkv: Tensor,
    pub attn: Tensor,
    pub gu: Tensor,
    pub h: Tensor,
    pub part: Tensor,
    pub logits: Tensor,
    pub history: Tensor,
    /// The grammar's allowed ids, a bit each (read while `Step::masked`).
    pub mask: Tensor,
    pub out_token: Tensor,
}

/// Keys per attention split during decode: 64 on GPUs, where a split's
/// keys are visited one after another by one workgroup and many small
/// splits fill the device (measured on an H200), 256 on CPU adapters, where
/// two cores are filled anyway and each split costs a merge.
pub fn decode_chunk(gpu: &Gpu) -> u32 {
    if gpu.adapter.device_type == "Cpu" {
        256
    } else {
        64
    }
}
/// Layers Quest leaves dense (every slot visited), as its paper does.
pub const QUEST_DENSE_LAYERS: usize = 2;
/// Tokens of repetition-penalty history the sampler sees.
pub const HISTORY: usize = 64;

impl Activations {
    pub fn new(
        gpu: &Gpu,
        c: &LlamaConfig,
        s: &AttnShape,
        max_batch: u32,
        logit_rows: u32,
    ) -> Result<Activations> {
        let b = max_batch as u64;
        let f = |label: &str, n: u64| gpu.zeros(label, n * 4);
        let chunks = s.ctx.div_ceil(decode_chunk(gpu)) as u64;
        Ok(Activations {
            tokens: f("tokens", b)?,
            x: f("x", b * c.d_model as u64)?,
            xn: f("xn", b * c.d_model as u64)?,
            qkv: f("qkv", b * s.qkv_width() as u64)?,
            attn: f("attn", b * (c.n_head * c.head_dim) as u64)?,
            gu: f("gate_up", b * 2 * c.ff as u64)?,
            h: f("ffn_h", b * c.ff as u64)?,
            part: gpu.zeros("attn_part", ops::attention_part_bytes(s, b.max(chunks)))?,
            logits: f("logits", logit_rows as u64 * c.vocab as u64)?,
            history: f("history", HISTORY as u64)?,
            mask: f("sample_mask", (c.vocab as u64).div_ceil(32))?,
            out_token: f("out_token", 1)?,
        })
    }
}

/// Per-layer sums of squared inputs of every projection, accumulated over
/// calibration text (activation-aware quantization).
pub struct CalibStats {
    pub attn_in: Vec<Tensor>,
    pub o_in: Vec<Tensor>,
    pub ffn_in: Vec<Tensor>,
    pub down_in: Vec<Tensor>,
    /// Gram matrices X^T X of the same inputs, when asked for (SparseGPT):
    /// per layer, [attn_in, o_in, ffn_in, down_in].
    pub gram: Option<Vec<[Tensor; 4]>>,
}

impl CalibStats {
    pub fn new(gpu: &Gpu, c: &LlamaConfig, gram: bool) -> Result<CalibStats> {
        let make = |what: &str, k: usize| -> Result<Vec<Tensor>> {
            (0..c.n_layer)
                .map(|l| Ok(gpu.zeros(&format!("calib.{l}.{what}"), k as u64 * 4)?))
                .collect()
        };
        let gram = if gram {
            let mut v = Vec::with_capacity(c.n_layer);
            for l in 0..c.n_layer {
                let z = |what: &str, k: usize| -> Result<Tensor> {
                    Ok(gpu.zeros(&format!("gram.{l}.{what}"), (k * k) as u64 * 4)?)
                };
                v.push([
                    z("attn_in", c.d_model)?,
                    z("o_in", c.n_head * c.head_dim)?,
                    z("ffn_in", c.d_model)?,
                    z("down_in", c.ff)?,
                ]);
            }
            Some(v)
        } else {
            None
        };
        Ok(CalibStats {
            attn_in: make("attn_in", c.d_model)?,
            o_in: make("o_in", c.n_head * c.head_dim)?,
            ffn_in: make("ffn_in", c.d_model)?,
            down_in: make("down_in", c.ff)?,
            gram,
        })
    }

    /// The dispatches that add input `which` (0 attn_in, 1 o_in, 2 ffn_in,
    /// 3 down_in) of layer `l`, `x` of `k` channels, to the statistics.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        gpu: &Gpu,
        step: &StepBuffer,
        l: usize,
        which: usize,
        x: &Tensor,
        k: u32,
        max_batch: u32,
    ) -> Result<Vec<Dispatch>> {
        let stats = [&self.attn_in, &self.o_in, &self.ffn_in, &self.down_in][which];
        let mut d = vec![ops::sumsq(gpu, step, x, &stats[l], k, k, max_batch)?];
        if let Some(g) = &self.gram {
            d.push(ops::gram(gpu, step, x, &g[l][which], k, k, max_batch)?);
        }
        Ok(d)
    }
}

/// How the last projection runs in a graph.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Logits of the last token only, then the sampler.
    LastSampled,
    /// Logits of every token of the batch (teacher forcing); no sampling.
    AllRows,
}

/// Builds the dispatch list of one forward step over a batch: `batched`
/// uses the tiled matmul (prefill), otherwise matvec (decode, one token).
#[allow(clippy::too_many_arguments)]
pub fn build_graph(
    gpu: &Gpu,
    step: &StepBuffer,
    c: &LlamaConfig,
    w: &LlamaWeights,
    kv: &KvCache,
    a: &Activations,
    ropes: &Rope,
    max_batch: u32,
    batched: bool,
    head: Head,
    sampler: &SampleUniform,
    calib: Option<&CalibStats>,
    snap_score: bool,
) -> Result<Vec<Dispatch>> {
    let s = &kv.shape;
    let d = c.d_model as u32;
    let mut g = Vec::with_capacity(c.n_layer * 10 + 4);
    let proj = |w: &GpuWeight, x: &Tensor, y: &Tensor, acc: bool| -> Result<Vec<Dispatch>> {
        if batched {
            Ok(ops::matmul(gpu, step, w, x, y, acc, max_batch)?)
        } else {
            Ok(ops::matvec(
                gpu,
                step,
                w,
                x,
                y,
                MatvecOpts {
                    accumulate: acc,
                    ..Default::default()
                },
            )?)
        }
    };
    g.extend(ops::embed(gpu, step, &w.embed, &a.tokens, &a.x, max_batch)?);
    if let Some(sc) = c.embed_scale {
        g.push(ops::scale(gpu, step, &a.x, d, sc, max_batch)?);
    }
    // A decode step hands each norm and the gated activation to the
    // projection that reads it (ops::matvec_from fuses them on CPU adapters);
    // calibration records those inputs, so it keeps them as passes.
    let fuse_in = !batched && calib.is_none();
    let mv = |w: &GpuWeight, x: &Tensor, y: &Tensor, acc: bool, input: ops::ProjInput<'_>| {
        let o = MatvecOpts {
            accumulate: acc,
            ..Default::default()
        };
        ops::matvec_from(gpu, step, w, x, y, o, input)
    };
    // RMSNorm of the residual stream by `nw` into the projection `w`;
    // `slot` names the input for calibration.
    let normed =
        |l: usize, slot, nw: &Tensor, w: &GpuWeight, y: &Tensor| -> Result<Vec<Dispatch>> {
            if fuse_in {
                return Ok(mv(w, &a.x, y, false, norm_input(nw, c.eps, &a.xn))?);
            }
            let mut v = vec![ops::rmsnorm(
                gpu, step, nw, &a.x, &a.xn, d, c.eps, max_batch,
            )?];
            if let Some(cs) = calib {
                v.extend(cs.record(gpu, step, l, slot, &a.xn, d, max_batch)?);
            }
            v.extend(proj(w, &a.xn, y, false)?);
            Ok(v)
        };
    for (l, lw) in w.layers.iter().enumerate() {
        let rope = ropes.for_layer(c, l);
        g.extend(normed(l, 0, &lw.attn_norm, &lw.wqkv, &a.qkv)?);
        if let Some(b) = &lw.qkv_bias {
            g.push(ops::bias_act(
                gpu,
                step,
                b,
                &a.qkv,
                s.qkv_width(),
                ops::Activation::Identity,
                max_batch,
            )?);
        }
        if let Some(nw) = &lw.qk_norm {
            g.push(ops::head_rmsnorm(
                gpu,
                step,
                nw,
                &a.qkv,
                (c.n_head as u32, c.n_kv_head as u32, c.head_dim as u32),
                c.eps,
                max_batch,
            )?);
        }
        // The key mean comes from a prefill batch; decode steps keep it.
        if batched && s.kv.centres_k() {
            g.push(ops::kv_centre(
                gpu, step, s, rope, &a.qkv, &kv.k[l], max_batch,
            )?);
        }
        g.push(ops::rope_kv(
            gpu,
            step,
            s,
            rope,
            &a.qkv,
            kv.bind(l),
            max_batch,
        )?);
        if s.kv.k == KvDtype::KIVI2 {
            g.push(ops::kivi_pack(gpu, step, s, &kv.k[l])?);
        }
        // SnapKV's window, fed again: what it attends to, before compaction.
        if let (true, Some((scores, stats))) = (snap_score, &kv.snap) {
            g.extend(ops::snap_score(
                gpu,
                step,
                s,
                &a.qkv,
                kv.bind(l),
                stats,
                &scores[l],
                max_batch,
            )?);
        }
        // Quest leaves its first layers dense, as the paper does: their
        // attention is spread too widely for page selection.
        let dense = matches!(kv.policy, KvPolicy::Quest { .. }) && l < QUEST_DENSE_LAYERS;
        if let KvPolicy::Quest { page, top } = kv.policy {
            g.push(ops::kv_bounds(
                gpu,
                step,
                s,
                kv.bind(l),
                &kv.bounds[l],
                page,
            )?);
            if !batched && !dense {
                g.push(ops::quest_select(
                    gpu,
                    step,
                    s,
                    &a.qkv,
                    &kv.bounds[l],
                    &kv.pages,
                    page,
                    top,
                )?);
            }
        }
        g.extend(ops::attention(
            gpu,
            step,
            s,
            &a.qkv,
            kv.bind(l),
            &a.part,
            &a.attn,
            batched,
            ops::LayerAttn {
                all_slots: dense,
                pages_selected: matches!(kv.policy, KvPolicy::Quest { .. }) && !dense,
                ..c.layer_attn(l)
            },
        )?);
        if let Some(cs) = calib {
            let w = (c.n_head * c.head_dim) as u32;
            g.extend(cs.record(gpu, step, l, 1, &a.attn, w, max_batch)?);
        }
        match &lw.post_norms {
            // The input norm's output is spent: the projection lands there.
            Some((pn, _)) => {
                g.extend(proj(&lw.wo, &a.attn, &a.xn, false)?);
                g.push(ops::rmsnorm_add(
                    gpu, step, pn, &a.xn, &a.x, d, c.eps, max_batch,
                )?);
            }
            None => g.extend(proj(&lw.wo, &a.attn, &a.x, true)?),
        }
        g.extend(normed(l, 2, &lw.ffn_norm, &lw.w_gate_up, &a.gu)?);
        if !fuse_in {
            g.push(match c.geglu {
                true => ops::geglu(gpu, step, &a.gu, &a.h, c.ff as u32, max_batch)?,
                false => ops::swiglu(gpu, step, &a.gu, &a.h, c.ff as u32, max_batch)?,
            });
            if let Some(cs) = calib {
                g.extend(cs.record(gpu, step, l, 3, &a.h, c.ff as u32, max_batch)?);
            }
        }
        let down = |y: &Tensor, acc: bool| -> Result<Vec<Dispatch>> {
            if !fuse_in {
                return proj(&lw.w_down, &a.h, y, acc);
            }
            let gated = ops::ProjInput::Gated {
                gelu: c.geglu,
                scratch: &a.h,
            };
            Ok(mv(&lw.w_down, &a.gu, y, acc, gated)?)
        };
        match &lw.post_norms {
            Some((_, pn)) => {
                g.extend(down(&a.xn, false)?);
                g.push(ops::rmsnorm_add(
                    gpu, step, pn, &a.xn, &a.x, d, c.eps, max_batch,
                )?);
            }
            None => g.extend(down(&a.x, true)?),
        }
    }
    // The sampled head reads the final norm through its projection (fused
    // where ops::matvec_from can); every other head needs it written out.
    let head_norm = matches!(head, Head::LastSampled) && calib.is_none();
    if !head_norm {
        g.push(ops::rmsnorm(
            gpu,
            step,
            &w.out_norm,
            &a.x,
            &a.xn,
            d,
            c.eps,
            max_batch,
        )?);
    }
    let vocab = c.vocab as u32;
    match head {
        Head::AllRows => {
            g.extend(ops::matmul(
                gpu,
                step,
                w.lm_head(),
                &a.xn,
                &a.logits,
                false,
                max_batch,
            )?);
            if let Some(cap) = c.final_softcap {
                let rows = (a.logits.bytes / (vocab as u64 * 4)) as u32;
                g.push(ops::softcap(gpu, step, &a.logits, vocab, cap, rows)?);
            }
        }
        Head::LastSampled => {
            let (x, input) = match head_norm {
                true => (&a.x, norm_input(&w.out_norm, c.eps, &a.xn)),
                false => (&a.xn, ops::ProjInput::Plain),
            };
            let o = MatvecOpts {
                last_row: true,
                x_stride: d,
                ..Default::default()
            };
            g.extend(ops::matvec_from(
                gpu,
                step,
                w.lm_head(),
                x,
                &a.logits,
                o,
                input,
            )?);
            if let Some(cap) = c.final_softcap {
                g.push(ops::softcap(gpu, step, &a.logits, vocab, cap, 1)?);
            }
            g.push(ops::sample(
                gpu,
                step,
                sampler,
                &a.logits,
                &a.history,
                &a.out_token,
                &a.mask,
            )?);
        }
    }
    Ok(g)
}

/// RMSNorm by `g` as a projection's input, `xn` where it runs as a pass.
fn norm_input<'a>(g: &'a Tensor, eps: f32, xn: &'a Tensor) -> ops::ProjInput<'a> {
    ops::ProjInput::RmsNorm {
        g,
        eps,
        scratch: xn,
    }
}

/// The cos/sin tables for every cache position: the global one, and the
/// local layers' own when their rope base differs (Gemma 3).
pub struct Rope {
    pub global: Tensor,
    pub local: Option<Tensor>,
}

impl Rope {
    /// The table layer `l` rotates with.
    pub fn for_layer(&self, c: &LlamaConfig, l: usize) -> &Tensor {
        match (&self.local, c.local_rope(l)) {
            (Some(t), true) => t,
            _ => &self.global,
        }
    }
}

/// Builds [`Rope`] for `ctx` positions.
pub fn rope_table(gpu: &Gpu, c: &LlamaConfig, ctx: u32) -> Result<Rope> {
    let (factors, mscale) = c.rope_factors(ctx as usize);
    let table = |theta: f32| -> Result<Tensor> {
        let t = lottery_engine::reference::rope_table_with(
            ctx as usize,
            c.head_dim,
            theta,
            factors,
            mscale,
        );
        let flat: Vec<f32> = t.iter().flat_map(|p| *p).collect();
        Ok(gpu.upload("rope_table", &flat)?)
    };
    Ok(Rope {
        global: table(c.rope_theta)?,
        local: match c.rope_theta_local {
            Some(t) if !c.local_layers.is_empty() => Some(table(t)?),
            _ => None,
        },
    })
}
