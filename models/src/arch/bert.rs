//! BERT sentence encoders (all-MiniLM-L6-v2 and its family): config and
//! tokenizer from a sentence-transformers directory, weights on the GPU, and
//! one recorded graph that embeds a padded batch of sentences of different
//! lengths in a single submit.
//!
//! The forward is HF's `BertModel` with post-LayerNorm layers, the exact
//! (erf) GELU and bidirectional attention masked to each sentence's tokens,
//! followed by sentence-transformers' mean pooling over the mask and L2
//! normalisation.

use crate::{Error, Result};
use lottery_engine::formats::{self, GpuWeight};
use lottery_engine::gpu::{Dispatch, Gpu, Step, StepBuffer, Tensor};
use lottery_engine::ops::{self, Activation};
use lottery_engine::WeightFormat;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Hyper-parameters from `config.json` and the sentence-transformers files.
#[derive(Clone, Debug)]
pub struct BertConfig {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub head_dim: usize,
    pub ff: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub eps: f32,
    /// Tokens per input including [CLS] and [SEP]: `sentence_bert_config.json`'s
    /// `max_seq_length`, else the position table's size.
    pub max_seq_len: usize,
    /// A `Normalize` module follows pooling (modules.json).
    pub normalize: bool,
}

fn err(dir: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Model(format!("{}: {msg}", dir.display()))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Model(format!("{}: invalid JSON: {e}", path.display())))
}

impl BertConfig {
    /// Reads and checks `config.json`, `sentence_bert_config.json`,
    /// `modules.json` and `1_Pooling/config.json`; anything that would change
    /// the math from what we run is refused with the key that says so.
    pub fn from_dir(dir: &Path) -> Result<BertConfig> {
        let cfg = read_json(&dir.join("config.json"))?;
        let model_type = cfg["model_type"].as_str().unwrap_or("");
        if model_type != "bert" {
            return Err(Error::UnsupportedMetadata {
                key: "config.json: model_type".into(),
                value: format!("{:?}", cfg["model_type"]),
                why: "only BERT encoders (model_type \"bert\") are supported for embeddings".into(),
            });
        }
        let int = |k: &str| -> Result<usize> {
            cfg[k]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| Error::MissingKey {
                    key: format!("config.json: {k}"),
                })
        };
        let refuse = |key: &str, why: &str| Error::UnsupportedMetadata {
            key: format!("config.json: {key}"),
            value: cfg[key].to_string(),
            why: why.into(),
        };
        match cfg["hidden_act"].as_str() {
            Some("gelu") | None => {}
            Some(_) => {
                return Err(refuse(
                    "hidden_act",
                    "only the exact (erf) GELU is implemented",
                ))
            }
        }
        if !matches!(
            cfg["position_embedding_type"].as_str(),
            None | Some("absolute")
        ) {
            return Err(refuse(
                "position_embedding_type",
                "only absolute position embeddings are implemented",
            ));
        }
        if cfg["is_decoder"].as_bool() == Some(true) {
            return Err(refuse("is_decoder", "a causal BERT is not an encoder"));
        }
        let d_model = int("hidden_size")?;
        let n_head = int("num_attention_heads")?;
        if n_head == 0 || d_model % n_head != 0 {
            return Err(err(
                dir,
                format!("hidden_size {d_model} is not a multiple of num_attention_heads {n_head}"),
            ));
        }
        let head_dim = d_model / n_head;
        if head_dim as u32 > ops::ENCODER_MAX_HEAD_DIM {
            return Err(err(
                dir,
                format!(
                    "head size {head_dim} exceeds the encoder kernel's {}",
                    ops::ENCODER_MAX_HEAD_DIM
                ),
            ));
        }
        let max_positions = int("max_position_embeddings")?;
        let st = dir.join("sentence_bert_config.json");
        let max_seq_len = if st.is_file() {
            read_json(&st)?["max_seq_length"]
                .as_u64()
                .map(|v| v as usize)
                .unwrap_or(max_positions)
        } else {
            max_positions
        }
        .min(max_positions);
        if max_seq_len < 2 {
            return Err(err(
                dir,
                format!("max_seq_length {max_seq_len} leaves no room for text"),
            ));
        }
        let pooling = dir.join("1_Pooling/config.json");
        if pooling.is_file() {
            let p = read_json(&pooling)?;
            for (k, v) in p.as_object().into_iter().flatten() {
                let on = v.as_bool() == Some(true);
                let ok = match k.as_str() {
                    "pooling_mode_mean_tokens" => on,
                    k if k.starts_with("pooling_mode_") => !on,
                    _ => true,
                };
                if !ok {
                    return Err(Error::UnsupportedMetadata {
                        key: format!("1_Pooling/config.json: {k}"),
                        value: v.to_string(),
                        why: "only mean pooling over the attention mask is implemented".into(),
                    });
                }
            }
        }
        // Without modules.json (a bare BertModel) the vectors are still
        // normalised: cosine search is what they are for.
        let modules = dir.join("modules.json");
        let normalize = if modules.is_file() {
            read_json(&modules)?
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| {
                    m["type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("models.Normalize"))
                })
        } else {
            true
        };
        Ok(BertConfig {
            n_layer: int("num_hidden_layers")?,
            d_model,
            n_head,
            head_dim,
            ff: int("intermediate_size")?,
            vocab: int("vocab_size")?,
            max_positions,
            eps: cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
            max_seq_len,
            normalize,
        })
    }
}

/// One encoder layer on the GPU. Biases and norms stay f32.
struct Layer {
    wqkv: GpuWeight,
    bqkv: Tensor,
    wo: GpuWeight,
    bo: Tensor,
    ln1_g: Tensor,
    ln1_b: Tensor,
    w1: GpuWeight,
    b1: Tensor,
    w2: GpuWeight,
    b2: Tensor,
    ln2_g: Tensor,
    ln2_b: Tensor,
}

struct Weights {
    word: GpuWeight,
    pos: GpuWeight,
    type0: Tensor,
    ln_g: Tensor,
    ln_b: Tensor,
    layers: Vec<Layer>,
}

/// The tensors of a safetensors file, by name (a leading `bert.` dropped).
struct Tensors {
    map: memmap2::Mmap,
    path: PathBuf,
}

impl Tensors {
    fn open(path: &Path) -> Result<Tensors> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is only read; a concurrent writer could change
        // the values we copy but not the memory safety of the copy.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Tensors {
            map,
            path: path.to_path_buf(),
        })
    }

    fn st(&self) -> Result<safetensors::SafeTensors<'_>> {
        safetensors::SafeTensors::deserialize(&self.map)
            .map_err(|e| Error::Model(format!("{}: {e}", self.path.display())))
    }

    /// Every tensor name, checked against the closed list BERT reads: a
    /// tensor we would not use (or a layer past num_hidden_layers) means the
    /// file is not the model we would run.
    fn check_names(&self, c: &BertConfig) -> Result<()> {
        let st = self.st()?;
        let mut unexpected = Vec::new();
        for name in st.names() {
            let n = name.strip_prefix("bert.").unwrap_or(name);
            let known = n.starts_with("embeddings.")
                && [
                    "word_embeddings.weight",
                    "position_embeddings.weight",
                    "token_type_embeddings.weight",
                    "LayerNorm.weight",
                    "LayerNorm.bias",
                    "LayerNorm.gamma",
                    "LayerNorm.beta",
                    "position_ids",
                ]
                .iter()
                .any(|s| n == format!("embeddings.{s}"))
                || n.strip_prefix("encoder.layer.").is_some_and(|rest| {
                    let (l, what) = rest.split_once('.').unwrap_or(("", ""));
                    l.parse::<usize>().is_ok_and(|l| l < c.n_layer)
                        && what.rsplit_once('.').is_some_and(|(base, p)| {
                            LAYER_TENSORS.contains(&base)
                                && ["weight", "bias", "gamma", "beta"].contains(&p)
                        })
                })
                // The pooler and masked-LM heads do not touch mean-pooled
                // embeddings: sentence-transformers ignores them too.
                || n.starts_with("pooler.")
                || name.starts_with("cls.");
            if !known {
                unexpected.push(name.to_string());
            }
        }
        if !unexpected.is_empty() {
            unexpected.sort();
            let count = unexpected.len();
            let mut names = unexpected
                .into_iter()
                .take(8)
                .collect::<Vec<_>>()
                .join(", ");
            if count > 8 {
                names.push_str(&format!(", ... ({} more)", count - 8));
            }
            return Err(Error::UnexpectedTensors {
                arch: "bert".into(),
                count,
                names,
            });
        }
        Ok(())
    }

    fn has(&self, name: &str) -> bool {
        self.st()
            .is_ok_and(|st| st.tensor(name).is_ok() || st.tensor(&format!("bert.{name}")).is_ok())
    }

    /// A tensor as f32 with its shape checked.
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let st = self.st()?;
        let view = st
            .tensor(name)
            .or_else(|_| st.tensor(&format!("bert.{name}")))
            .map_err(|_| Error::MissingTensor {
                name: name.to_string(),
            })?;
        if view.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: format!("{shape:?}"),
                got: format!("{:?}", view.shape()),
            });
        }
        let fmt = match view.dtype() {
            safetensors::Dtype::F32 => WeightFormat::F32,
            safetensors::Dtype::F16 => WeightFormat::F16,
            safetensors::Dtype::BF16 => WeightFormat::BF16,
            other => {
                return Err(Error::Model(format!(
                    "{}: tensor `{name}` has dtype {other:?}; f32/f16/bf16 expected",
                    self.path.display()
                )))
            }
        };
        let mut out = vec![0f32; shape.iter().product()];
        formats::dequantize(fmt, view.data(), &mut out)
            .map_err(|e| Error::Model(format!("tensor `{name}`: {e}")))?;
        Ok(out)
    }
}

/// What each layer holds (`.weight`/`.bias`; older checkpoints name the
/// LayerNorm parameters `.gamma`/`.beta`).
const LAYER_TENSORS: [&str; 8] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
];

impl Weights {
    fn load(
        gpu: &Gpu,
        t: &Tensors,
        c: &BertConfig,
        quantize: Option<WeightFormat>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Weights> {
        let d = c.d_model;
        let up = |name: &str, v: &[f32]| -> Result<Tensor> { Ok(gpu.upload(name, v)?) };
        let matrix = |label: &str, v: Vec<f32>, rows: usize, cols: usize| -> Result<GpuWeight> {
            let fmt = quantize.unwrap_or(WeightFormat::F32);
            if cols % fmt.row_multiple() != 0 {
                return Err(Error::Model(format!(
                    "tensor `{label}`: rows of {cols} cannot be stored as {} (blocks of {})",
                    fmt.name(),
                    fmt.row_multiple()
                )));
            }
            let bytes = formats::quantize(fmt, &v)?;
            Ok(GpuWeight::upload(gpu, label, fmt, &bytes, rows, cols)?)
        };
        let word_v = t.f32("embeddings.word_embeddings.weight", &[c.vocab, d])?;
        let word = GpuWeight::upload(
            gpu,
            "embeddings.word_embeddings.weight",
            WeightFormat::F32,
            bytemuck::cast_slice(&word_v),
            c.vocab,
            d,
        )?;
        let pos_v = t.f32(
            "embeddings.position_embeddings.weight",
            &[c.max_positions, d],
        )?;
        let pos = GpuWeight::upload(
            gpu,
            "embeddings.position_embeddings.weight",
            WeightFormat::F32,
            bytemuck::cast_slice(&pos_v),
            c.max_positions,
            d,
        )?;
        // token_type_ids are all 0 for single sentences: only row 0 is read.
        let st = t.st()?;
        let tt_name = "embeddings.token_type_embeddings.weight";
        let types = st
            .tensor(tt_name)
            .or_else(|_| st.tensor(&format!("bert.{tt_name}")))
            .map(|v| v.shape().first().copied().unwrap_or(0))
            .map_err(|_| Error::MissingTensor {
                name: tt_name.into(),
            })?;
        let type_v = t.f32(tt_name, &[types.max(1), d])?;
        let type0 = up(tt_name, &type_v[..d])?;
        let ln = |base: &str| -> Result<(Tensor, Tensor)> {
            let pick = |new: &str, old: &str| {
                let (n, o) = (format!("{base}.{new}"), format!("{base}.{old}"));
                if t.has(&o) && !t.has(&n) {
                    o
                } else {
                    n
                }
            };
            let g = t.f32(&pick("weight", "gamma"), &[d])?;
            let b = t.f32(&pick("bias", "beta"), &[d])?;
            Ok((
                up(&format!("{base}.weight"), &g)?,
                up(&format!("{base}.bias"), &b)?,
            ))
        };
        let (ln_g, ln_b) = ln("embeddings.LayerNorm")?;
        let total = c.n_layer + 1;
        progress(1, total);
        let mut layers = Vec::with_capacity(c.n_layer);
        for l in 0..c.n_layer {
            let n = |s: &str| format!("encoder.layer.{l}.{s}");
            let mut qkv = Vec::with_capacity(3 * d * d);
            let mut bqkv = Vec::with_capacity(3 * d);
            for part in ["query", "key", "value"] {
                qkv.extend(t.f32(&n(&format!("attention.self.{part}.weight")), &[d, d])?);
                bqkv.extend(t.f32(&n(&format!("attention.self.{part}.bias")), &[d])?);
            }
            let (ln1_g, ln1_b) = ln(&n("attention.output.LayerNorm"))?;
            let (ln2_g, ln2_b) = ln(&n("output.LayerNorm"))?;
            layers.push(Layer {
                wqkv: matrix(&n("attention.qkv"), qkv, 3 * d, d)?,
                bqkv: up(&n("attention.qkv.bias"), &bqkv)?,
                wo: matrix(
                    &n("attention.output.dense.weight"),
                    t.f32(&n("attention.output.dense.weight"), &[d, d])?,
                    d,
                    d,
                )?,
                bo: up(
                    &n("attention.output.dense.bias"),
                    &t.f32(&n("attention.output.dense.bias"), &[d])?,
                )?,
                ln1_g,
                ln1_b,
                w1: matrix(
                    &n("intermediate.dense.weight"),
                    t.f32(&n("intermediate.dense.weight"), &[c.ff, d])?,
                    c.ff,
                    d,
                )?,
                b1: up(
                    &n("intermediate.dense.bias"),
                    &t.f32(&n("intermediate.dense.bias"), &[c.ff])?,
                )?,
                w2: matrix(
                    &n("output.dense.weight"),
                    t.f32(&n("output.dense.weight"), &[d, c.ff])?,
                    d,
                    c.ff,
                )?,
                b2: up(
                    &n("output.dense.bias"),
                    &t.f32(&n("output.dense.bias"), &[d])?,
                )?,
                ln2_g,
                ln2_b,
            });
            progress(l + 2, total);
        }
        Ok(Weights {
            word,
            pos,
            type0,
            ln_g,
            ln_b,
            layers,
        })
    }
}

/// Buffers and the recorded graph of one batch shape bound.
struct Runner {
    step: StepBuffer,
    tokens: Tensor,
    positions: Tensor,
    /// [n_seq, L, len_0, ...]: the batch's sequences, read by attention and pooling.
    seq: Tensor,
    pooled: Tensor,
    graph: Vec<Dispatch>,
    // Held for the bind groups above.
    _acts: Vec<Tensor>,
}

/// Tokens per submitted batch (sentences x padded length).
pub const MAX_BATCH_TOKENS: u32 = 2048;
/// Sentences per submitted batch.
pub const MAX_BATCH_SEQS: u32 = 128;

impl Runner {
    fn new(gpu: &Gpu, c: &BertConfig, w: &Weights) -> Result<Runner> {
        let t = MAX_BATCH_TOKENS;
        let d = c.d_model as u32;
        let ff = c.ff as u32;
        let f = |label: &str, n: u64| gpu.zeros(label, n * 4);
        let step = StepBuffer::new(gpu);
        let tokens = f("tokens", t as u64)?;
        let positions = f("positions", t as u64)?;
        let seq = f("seq", 2 + MAX_BATCH_SEQS as u64)?;
        let pooled = f("pooled", MAX_BATCH_SEQS as u64 * d as u64)?;
        let xw = f("embed.word", t as u64 * d as u64)?;
        let xp = f("embed.pos", t as u64 * d as u64)?;
        let h = f("hidden", t as u64 * d as u64)?;
        let h2 = f("hidden.attn", t as u64 * d as u64)?;
        let o = f("proj", t as u64 * d as u64)?;
        let a = f("attn", t as u64 * d as u64)?;
        let qkv = f("qkv", t as u64 * 3 * d as u64)?;
        let fb = f("ffn", t as u64 * ff as u64)?;
        let s = &step;
        let mut g = Vec::with_capacity(4 + c.n_layer * 9);
        g.extend(ops::embed(gpu, s, &w.word, &tokens, &xw, t)?);
        g.extend(ops::embed(gpu, s, &w.pos, &positions, &xp, t)?);
        g.push(ops::layernorm(
            gpu, s, &xw, &w.type0, &xp, &w.ln_g, &w.ln_b, &h, d, c.eps, t,
        )?);
        for l in &w.layers {
            g.extend(ops::matmul(gpu, s, &l.wqkv, &h, &qkv, false, t)?);
            g.push(ops::bias_act(
                gpu,
                s,
                &l.bqkv,
                &qkv,
                3 * d,
                Activation::Identity,
                t,
            )?);
            g.push(ops::encoder_attention(
                gpu,
                s,
                c.n_head as u32,
                c.head_dim as u32,
                &qkv,
                &seq,
                &a,
                t,
            )?);
            g.extend(ops::matmul(gpu, s, &l.wo, &a, &o, false, t)?);
            g.push(ops::layernorm(
                gpu, s, &o, &l.bo, &h, &l.ln1_g, &l.ln1_b, &h2, d, c.eps, t,
            )?);
            g.extend(ops::matmul(gpu, s, &l.w1, &h2, &fb, false, t)?);
            g.push(ops::bias_act(gpu, s, &l.b1, &fb, ff, Activation::Gelu, t)?);
            g.extend(ops::matmul(gpu, s, &l.w2, &fb, &o, false, t)?);
            g.push(ops::layernorm(
                gpu, s, &o, &l.b2, &h2, &l.ln2_g, &l.ln2_b, &h, d, c.eps, t,
            )?);
        }
        g.push(ops::mean_pool(
            gpu,
            s,
            &h,
            &seq,
            &pooled,
            d,
            MAX_BATCH_SEQS,
            c.normalize,
        )?);
        Ok(Runner {
            step,
            tokens,
            positions,
            seq,
            pooled,
            graph: g,
            _acts: vec![xw, xp, h, h2, o, a, qkv, fb],
        })
    }
}

/// One input's sentence embedding.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// `d_model` values (unit length when the model normalises).
    pub vector: Vec<f32>,
    /// Tokens the encoder saw, [CLS] and [SEP] included.
    pub tokens: usize,
    /// The input was longer than `max_seq_len` tokens and was cut.
    pub truncated: bool,
}

/// A sentence encoder on the GPU with its tokenizer.
pub struct BertEncoder {
    pub gpu: Arc<Gpu>,
    pub config: BertConfig,
    pub dir: PathBuf,
    /// Weight format of the matrices (f32 unless quantized at load).
    pub format: WeightFormat,
    tokenizer: tokenizers::Tokenizer,
    /// The same without truncation, for counting the pieces of long text.
    counter: tokenizers::Tokenizer,
    weights: Weights,
    runner: Mutex<Runner>,
    fingerprint: String,
}

/// 64-bit FNV-1a: a fingerprint that ties a knowledge base to the exact
/// weights that embedded it (not a security hash).
pub(crate) fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    let mut h = h;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl BertEncoder {
    /// Loads a sentence-transformers (or bare `BertModel`) directory:
    /// `config.json`, `model.safetensors`, `tokenizer.json`.
    pub fn load(
        gpu: Arc<Gpu>,
        dir: &Path,
        quantize: Option<WeightFormat>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<BertEncoder> {
        if !dir.is_dir() {
            return Err(Error::Model(format!(
                "{}: not a model directory (expected config.json, model.safetensors, tokenizer.json)",
                dir.display()
            )));
        }
        let config = BertConfig::from_dir(dir)?;
        let tensors = Tensors::open(&dir.join("model.safetensors"))?;
        tensors.check_names(&config)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        // tokenizer.json itself pads to 128 and truncates at 128; the model
        // runs unpadded (we pad per batch and mask) and cut at max_seq_len.
        tokenizer.with_padding(None);
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: config.max_seq_len,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        if tokenizer.get_vocab_size(true) > config.vocab {
            return Err(Error::Model(format!(
                "{}: tokenizer has {} tokens but word_embeddings only {} rows",
                dir.display(),
                tokenizer.get_vocab_size(true),
                config.vocab
            )));
        }
        let weights = Weights::load(&gpu, &tensors, &config, quantize, progress)?;
        let runner = Runner::new(&gpu, &config, &weights)?;
        let mut h = fnv1a(0xcbf2_9ce4_8422_2325, &tensors.map);
        h = fnv1a(
            h,
            &std::fs::read(dir.join("config.json")).unwrap_or_default(),
        );
        h = fnv1a(h, &std::fs::read(&tok_path).unwrap_or_default());
        let format = quantize.unwrap_or(WeightFormat::F32);
        Ok(BertEncoder {
            fingerprint: format!("fnv1a64:{h:016x}/{}", format.name()),
            gpu,
            config,
            dir: dir.to_path_buf(),
            format,
            tokenizer,
            counter,
            weights,
            runner: Mutex::new(runner),
        })
    }

    /// Identifies the weights, tokenizer and weight format: vectors from two
    /// encoders are comparable only when their fingerprints are equal.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Vector size.
    pub fn dim(&self) -> usize {
        self.config.d_model
    }

    /// Model input ids ([CLS] ... [SEP], cut at `max_seq_len`) and whether
    /// the text was cut.
    pub fn tokenize(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), !enc.get_overflowing().is_empty()))
    }

    /// Word pieces of `text` without special tokens or truncation (for
    /// chunking to a token budget).
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self
            .counter
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .len())
    }

    /// Weight bytes on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        let w = &self.weights;
        let mut b = w.word.bytes() + w.pos.bytes();
        for l in &w.layers {
            b += l.wqkv.bytes() + l.wo.bytes() + l.w1.bytes() + l.w2.bytes();
        }
        b
    }

    /// Embeds every text, batching sentences of similar length into one
    /// padded, masked submit each. Empty (or whitespace-only) texts are an
    /// error naming the input.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        self.embed_with_progress(texts, &mut |_, _| {})
    }

    /// As [`BertEncoder::embed`], calling `progress(done, total)` after each batch.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embed_with_progress(
        &self,
        texts: &[&str],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Embedding>> {
        // Threads sharing one encoder take turns.
        let mut runner = self
            .runner
            .lock()
            .map_err(|_| Error::Model("encoder state poisoned by an earlier panic".into()))?;
        pollster::block_on(self.embed_batches(&mut runner, texts, progress))
    }

    /// [`BertEncoder::embed_with_progress`] for callers that must not block
    /// (the browser): each batch's readback yields to the event loop. A
    /// second call while one runs is an error, never a wait that would block
    /// the executor (in the browser no other thread could release it).
    #[allow(clippy::await_holding_lock)]
    pub async fn embed_async(
        &self,
        texts: &[&str],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Embedding>> {
        let mut runner = self.runner.try_lock().map_err(|e| match e {
            std::sync::TryLockError::WouldBlock => {
                Error::Model("the encoder is busy with another embed call".into())
            }
            std::sync::TryLockError::Poisoned(_) => {
                Error::Model("encoder state poisoned by an earlier panic".into())
            }
        })?;
        self.embed_batches(&mut runner, texts, progress).await
    }

    /// Tokenizes, batches and runs `texts` on the (locked) batch buffers.
    async fn embed_batches(
        &self,
        runner: &mut Runner,
        texts: &[&str],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Embedding>> {
        let mut inputs = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            if t.trim().is_empty() {
                return Err(Error::Input {
                    index: i,
                    msg: "empty text has nothing to embed".into(),
                });
            }
            inputs.push(self.tokenize(t)?);
        }
        // Longest first, so each batch pads to its first sentence and the
        // padding stays small.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(inputs[i].0.len()));
        let mut out: Vec<Option<Embedding>> = vec![None; inputs.len()];
        let d = self.config.d_model;

        let mut done = 0;
        let mut i = 0;
        while i < order.len() {
            let seq_len = inputs[order[i]].0.len();
            let per = (MAX_BATCH_TOKENS as usize / seq_len).clamp(1, MAX_BATCH_SEQS as usize);
            let batch: Vec<usize> = order[i..(i + per).min(order.len())].to_vec();
            i += batch.len();
            let n_tokens = batch.len() * seq_len;
            let mut ids = vec![0u32; n_tokens];
            let mut pos = vec![0u32; n_tokens];
            let mut seq = vec![batch.len() as u32, seq_len as u32];
            for (s, &k) in batch.iter().enumerate() {
                let toks = &inputs[k].0;
                ids[s * seq_len..s * seq_len + toks.len()].copy_from_slice(toks);
                for (j, p) in pos[s * seq_len..(s + 1) * seq_len].iter_mut().enumerate() {
                    *p = j as u32;
                }
                seq.push(toks.len() as u32);
            }
            let q = &self.gpu.queue;
            q.write_buffer(&runner.tokens.buffer, 0, bytemuck::cast_slice(&ids));
            q.write_buffer(&runner.positions.buffer, 0, bytemuck::cast_slice(&pos));
            q.write_buffer(&runner.seq.buffer, 0, bytemuck::cast_slice(&seq));
            let st = Step {
                n_tokens: n_tokens as u32,
                ..Default::default()
            };
            self.gpu.run(&runner.step, &st, &runner.graph)?;
            let pooled: Vec<f32> = self
                .gpu
                .read_async(&runner.pooled, 0, (batch.len() * d * 4) as u64)
                .await?;
            for (s, &k) in batch.iter().enumerate() {
                out[k] = Some(Embedding {
                    vector: pooled[s * d..(s + 1) * d].to_vec(),
                    tokens: inputs[k].0.len(),
                    truncated: inputs[k].1,
                });
            }
            done += batch.len();
            progress(done, inputs.len());
        }
        Ok(out.into_iter().flatten().collect())
    }
}
