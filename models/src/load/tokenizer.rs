//! Tokenizers: built from a GGUF vocabulary, or loaded from a `tokenizer.json`.
//!
//! Conventions (they match the golden data):
//! - [`Tokenizer::encode`] never adds BOS/EOS or any other template token;
//!   the caller decides (see [`Tokenizer::add_bos_token`]).
//! - Special tokens written in the text (`<|im_start|>`) are recognised as
//!   such, not split into pieces.
//! - Byte-level BPE drops characters whose bytes are absent from the
//!   vocabulary (SmolLM2 lacks e.g. 0x04) instead of emitting an unknown
//!   token: that is what the HF tokenizer the model was trained with does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::load::gguf::GgufFile;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
mod token_type {
    pub const NORMAL: i64 = 1;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
}

// Pre-tokenizer regexes from the models' own tokenizer.json files, for GGUF
// `tokenizer.ggml.pre` values that need a Split before ByteLevel.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tok_err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

fn hf_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{context}: {e}"))
}

/// A text tokenizer. Cheap to clone (the tables are shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    hf: tokenizers::Tokenizer,
    /// Vocabulary piece per id, as stored (`"Ġworld"` for byte-level BPE).
    /// `None` for ids the vocabulary skips.
    pieces: Vec<Option<String>>,
    /// Ids of special (control) tokens, which `skip_special` drops.
    special: Vec<bool>,
    /// For byte-level tokenizers, the bytes each token decodes to, computed
    /// exactly as the HF ByteLevel decoder does; `None` for other kinds.
    token_bytes: Option<Vec<Vec<u8>>>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.inner.bos)
            .field("eos", &self.inner.eos)
            .field("byte_level", &self.inner.token_bytes.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` keys:
    /// `gpt2` (byte-level BPE with merges) or `llama` (SentencePiece BPE:
    /// pieces with scores and byte fallback, Llama 2, Mistral, Phi-3, Gemma).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" && model != "llama" {
            return Err(tok_err(format!(
                "tokenizer.ggml.model '{model}' is not supported ('gpt2' byte-level BPE and \
                 'llama' SentencePiece are); put the model's tokenizer.json beside it and use \
                 Tokenizer::from_file"
            )));
        }

        let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 || u32::try_from(n).is_err() {
            return Err(tok_err(format!(
                "tokenizer.ggml.tokens has {n} entries (must be 1..=2^32-1)"
            )));
        }
        let types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type") {
            None => vec![1; n],
            Some(_) => {
                let arr = gguf.get_array("tokenizer.ggml.token_type")?;
                if arr.len() != n {
                    return Err(tok_err(format!(
                        "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {n}",
                        arr.len()
                    )));
                }
                arr.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_i64().ok_or_else(|| {
                            tok_err(format!(
                                "tokenizer.ggml.token_type[{i}] is a {}, expected an integer",
                                v.meta_type().name()
                            ))
                        })
                    })
                    .collect::<Result<_>>()?
            }
        };

        // Some converted vocabularies repeat a token; the first id keeps the
        // string (later duplicates are unreachable by encoding, still decodable).
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        vocab.reserve(n);
        for (id, t) in tokens.iter().enumerate() {
            vocab.entry((*t).to_string()).or_insert(id as u32);
        }

        let mut hf = if model == "llama" {
            spm_tokenizer(gguf, &tokens, &types, vocab)?
        } else {
            gpt2_tokenizer(gguf, vocab)?
        };

        let mut special = vec![false; n];
        let mut added = Vec::new();
        for (id, (&t, &ty)) in tokens.iter().zip(&types).enumerate() {
            match ty {
                token_type::CONTROL => {
                    special[id] = true;
                    added.push(AddedToken::from(t.to_string(), true));
                }
                token_type::USER_DEFINED => added.push(AddedToken::from(t.to_string(), false)),
                _ => {}
            }
        }
        hf.add_special_tokens(&added);

        let id_key = |key: &str| -> Result<Option<u32>> {
            match gguf.opt_u32(key)? {
                Some(id) if id as usize >= n => Err(tok_err(format!(
                    "{key} = {id} is outside the vocabulary of {n} tokens"
                ))),
                other => Ok(other),
            }
        };
        let bos = id_key("tokenizer.ggml.bos_token_id")?;
        let eos = id_key("tokenizer.ggml.eos_token_id")?;
        let unk = id_key("tokenizer.ggml.unknown_token_id")?;
        let pad = id_key("tokenizer.ggml.padding_token_id")?;
        // llama.cpp's default: SentencePiece vocabularies add BOS.
        let add_bos = gguf
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(model == "llama");

        let pieces: Vec<Option<String>> = tokens.iter().map(|t| Some((*t).to_string())).collect();
        // SentencePiece output streams through the decoder (see StreamDecoder).
        let token_bytes = (model == "gpt2").then(|| byte_level_table(&pieces));
        Ok(Tokenizer {
            inner: Arc::new(Inner {
                hf,
                pieces,
                special,
                token_bytes,
                bos,
                eos,
                unk,
                pad,
                add_bos,
            }),
        })
    }
}

/// Byte-level BPE from `tokenizer.ggml.merges`.
fn gpt2_tokenizer(
    gguf: &GgufFile,
    vocab: tokenizers::models::bpe::Vocab,
) -> Result<tokenizers::Tokenizer> {
    let merges_raw = gguf.get_str_array("tokenizer.ggml.merges")?;
    let mut merges = Vec::with_capacity(merges_raw.len());
    for (i, m) in merges_raw.iter().enumerate() {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            tok_err(format!(
                "tokenizer.ggml.merges[{i}] = {m:?} is not two tokens separated by a space"
            ))
        })?;
        for part in [a, b] {
            if !vocab.contains_key(part) {
                return Err(tok_err(format!(
                    "tokenizer.ggml.merges[{i}] = {m:?}: {part:?} is not in the vocabulary"
                )));
            }
        }
        merges.push((a.to_string(), b.to_string()));
    }

    // No unk token: the HF tokenizer the models ship with has none, and
    // bytes missing from the vocab are dropped (see module docs).
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| hf_err("building BPE from tokenizer.ggml.tokens/merges", e))?;

    let pre = gguf.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let pre_tokenizer = gpt2_pre_tokenizer(pre)?;

    let mut hf = tokenizers::Tokenizer::new(bpe);
    hf.with_pre_tokenizer(Some(pre_tokenizer));
    hf.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(hf)
}

/// SentencePiece BPE as transformers converts it (its `LlamaConverter`):
/// merges of two pieces ranked by the merged piece's score, which is the
/// order SentencePiece (and llama.cpp's `llm_tokenizer_spm`) merges in;
/// spaces become `▁`, a `▁` is prepended unless
/// `tokenizer.ggml.add_space_prefix` is false, and bytes missing from the
/// pieces fall back to the `<0xXX>` tokens.
fn spm_tokenizer(
    gguf: &GgufFile,
    tokens: &[&str],
    types: &[i64],
    vocab: tokenizers::models::bpe::Vocab,
) -> Result<tokenizers::Tokenizer> {
    use tokenizers::decoders::{
        byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence as DSeq, strip::Strip,
    };
    use tokenizers::normalizers::{prepend::Prepend, replace::Replace, Sequence as NSeq};
    let n = tokens.len();
    let scores: Vec<f32> = match gguf.get("tokenizer.ggml.scores") {
        None => {
            return Err(tok_err(
                "a SentencePiece vocabulary needs tokenizer.ggml.scores",
            ))
        }
        Some(_) => {
            let arr = gguf.get_array("tokenizer.ggml.scores")?;
            if arr.len() != n {
                return Err(tok_err(format!(
                    "tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {n}",
                    arr.len()
                )));
            }
            arr.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64().map(|x| x as f32).ok_or_else(|| {
                        tok_err(format!("tokenizer.ggml.scores[{i}] is not a number"))
                    })
                })
                .collect::<Result<_>>()?
        }
    };
    // Every split of every normal piece into two pieces is a merge, ranked
    // by the whole piece's score (higher first; ties by id).
    let mut ranked: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        if types[id] != token_type::NORMAL && types[id] != token_type::USER_DEFINED {
            continue;
        }
        for (k, _) in t.char_indices().skip(1) {
            let (a, b) = t.split_at(k);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((scores[id], id as u32, a.to_string(), b.to_string()));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = ranked.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let unk = gguf
        .opt_u32("tokenizer.ggml.unknown_token_id")?
        .and_then(|i| tokens.get(i as usize))
        .map(|s| s.to_string());
    let mut b = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk {
        b = b.unk_token(u);
    }
    let bpe = b.build().map_err(|e| {
        hf_err(
            "building SentencePiece BPE from tokenizer.ggml.tokens/scores",
            e,
        )
    })?;
    let mut hf = tokenizers::Tokenizer::new(bpe);
    let space = Replace::new(" ", "\u{2581}").map_err(|e| hf_err("building the space rule", e))?;
    let prefix = gguf
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let norm = if prefix {
        NSeq::new(vec![Prepend::new("\u{2581}".into()).into(), space.into()])
    } else {
        NSeq::new(vec![space.into()])
    };
    hf.with_normalizer(Some(norm));
    let unspace =
        Replace::new("\u{2581}", " ").map_err(|e| hf_err("building the space rule", e))?;
    let mut dec: Vec<DecoderWrapper> = vec![
        DecoderWrapper::Replace(unspace),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if prefix {
        dec.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    hf.with_decoder(Some(DSeq::new(dec)));
    Ok(hf)
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. BOS/EOS come from a
    /// `tokenizer_config.json` beside it, when there is one. Truncation and
    /// padding configured in the file are switched off: callers truncate.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut hf = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| hf_err(&format!("loading {}", path.display()), e))?;
        hf.with_truncation(None)
            .map_err(|e| hf_err(&format!("disabling truncation for {}", path.display()), e))?;
        hf.with_padding(None);

        let vocab = hf.get_vocab(true);
        let size = vocab.values().max().map_or(0, |&m| m as usize + 1);
        // Ids index tables below; a file with a few tokens at huge ids would
        // otherwise make us allocate gigabytes.
        if size > 2 * vocab.len() + 1024 {
            return Err(tok_err(format!(
                "{}: highest token id {} is far beyond the {} tokens in the vocabulary",
                path.display(),
                size - 1,
                vocab.len()
            )));
        }
        let mut pieces: Vec<Option<String>> = vec![None; size];
        for (t, &id) in &vocab {
            pieces[id as usize] = Some(t.clone());
        }
        let mut special = vec![false; size];
        for (&id, t) in hf.get_added_tokens_decoder().iter() {
            if t.special {
                if let Some(s) = special.get_mut(id as usize) {
                    *s = true;
                }
            }
        }
        let token_bytes = matches!(hf.get_decoder(), Some(DecoderWrapper::ByteLevel(_)))
            .then(|| byte_level_table(&pieces));
        // A post-processor that adds tokens (BERT's [CLS]/[SEP], Llama's BOS)
        // is how tokenizer.json says "add special tokens".
        let add_bos = hf
            .get_post_processor()
            .is_some_and(|pp| tokenizers::PostProcessor::added_tokens(pp, false) > 0);

        let (bos, eos, unk, pad) = match path.parent().map(|d| d.join("tokenizer_config.json")) {
            Some(cfg) if cfg.is_file() => {
                let text = std::fs::read_to_string(&cfg).map_err(|e| Error::io(&cfg, e))?;
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| tok_err(format!("parsing {}: {e}", cfg.display())))?;
                let id = |key: &str| config_token(&json, key).and_then(|s| hf.token_to_id(&s));
                (
                    id("bos_token"),
                    id("eos_token"),
                    id("unk_token"),
                    id("pad_token"),
                )
            }
            _ => (None, None, None, None),
        };

        Ok(Tokenizer {
            inner: Arc::new(Inner {
                hf,
                pieces,
                special,
                token_bytes,
                bos,
                eos,
                unk,
                pad,
                add_bos,
            }),
        })
    }

    /// The tokenizer for a model file: a `tokenizer.json` in the model's
    /// folder when there is one whose vocabulary size matches the GGUF's,
    /// otherwise the GGUF's own vocabulary. The size check keeps a tokenizer
    /// belonging to another model in a shared folder from being picked up.
    pub fn for_model(gguf: &GgufFile) -> Result<Self> {
        let sibling = gguf
            .path()
            .and_then(Path::parent)
            .map(|d| d.join("tokenizer.json"))
            .filter(|p| p.is_file());
        if let Some(p) = sibling {
            let n_gguf = gguf
                .get_array("tokenizer.ggml.tokens")
                .map(|a| a.len())
                .ok();
            let t = Tokenizer::from_file(&p)?;
            if n_gguf.is_none_or(|n| n == t.vocab_size()) {
                return Ok(t);
            }
        }
        Tokenizer::from_gguf(gguf)
    }

    /// Token ids for `text`. Special tokens written in the text are parsed;
    /// nothing (no BOS) is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    /// Like [`Tokenizer::encode`]; with `add_special_tokens` the tokenizer's
    /// own additions apply too (BOS when the GGUF says `add_bos_token`, the
    /// post-processor's [CLS]/[SEP] for a tokenizer.json).
    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .hf
            .encode_fast(text, add_special_tokens)
            .map_err(|e| hf_err("encoding", e))?;
        let mut ids = enc.get_ids().to_vec();
        // GGUF-built tokenizers have no post-processor; add BOS by hand.
        if add_special_tokens && self.inner.hf.get_post_processor().is_none() && self.inner.add_bos
        {
            if let Some(bos) = self.inner.bos {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    fn check_id(&self, id: u32) -> Result<()> {
        match self.inner.pieces.get(id as usize) {
            Some(Some(_)) => Ok(()),
            _ => Err(tok_err(format!(
                "token id {id} is not in the vocabulary (size {})",
                self.vocab_size()
            ))),
        }
    }

    /// Text for `ids`. With `skip_special`, control tokens (`<|im_end|>`) are
    /// left out. Invalid UTF-8 (e.g. half an emoji) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        for &id in ids {
            self.check_id(id)?;
        }
        self.inner
            .hf
            .decode(ids, skip_special)
            .map_err(|e| hf_err("decoding", e))
    }

    /// A decoder that turns ids into text one at a time.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder {
        StreamDecoder::new(self.clone(), skip_special)
    }

    /// The vocabulary entry for `id` as stored (`"Ġworld"`, `"<|im_end|>"`).
    pub fn token_to_piece(&self, id: u32) -> Option<&str> {
        self.inner.pieces.get(id as usize)?.as_deref()
    }

    /// The bytes `id` decodes to, for byte-level tokenizers (None otherwise or
    /// for an unknown id). Useful for constrained decoding and streaming.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.inner
            .token_bytes
            .as_ref()?
            .get(id as usize)
            .map(Vec::as_slice)
    }

    /// True for byte-level BPE tokenizers (GPT-2 style).
    pub fn is_byte_level(&self) -> bool {
        self.inner.token_bytes.is_some()
    }

    /// True for control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .special
            .get(id as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Id of an exact vocabulary entry (including special tokens).
    pub fn id_of(&self, token: &str) -> Option<u32> {
        self.inner.hf.token_to_id(token)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.inner.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.inner.eos
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.inner.unk
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.inner.pad
    }

    /// Whether the model expects BOS at the start of a sequence
    /// (`tokenizer.ggml.add_bos_token`; false for SmolLM2).
    pub fn add_bos_token(&self) -> bool {
        self.inner.add_bos
    }

    /// Number of ids (highest id + 1, special tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.pieces.len()
    }

    /// The wrapped Hugging Face tokenizer, for anything not covered here.
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner.hf
    }
}

/// Pre-tokenizer for a GGUF `tokenizer.ggml.pre` value, mirroring what the
/// model's original tokenizer.json does.
fn gpt2_pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    // ByteLevel with its own GPT-2 regex; the prefix space is never added
    // (the golden data and llama.cpp agree).
    let byte_level =
        |use_regex| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, use_regex));
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let s = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| hf_err(&format!("compiling the '{pre}' pre-tokenizer regex"), e))?;
        Ok(PreTokenizerWrapper::Split(s))
    };
    Ok(match pre {
        "default" | "gpt-2" | "gpt2" => byte_level(true),
        // StarCoder-family vocabularies (SmolLM, Refact, ...) split every
        // digit on its own before the GPT-2 regex.
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true),
            ]))
        }
        // Not checked against golden data yet.
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                split(LLAMA3_PATTERN)?,
                byte_level(false),
            ]))
        }
        "qwen2" | "deepseek-r1-qwen" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(QWEN2_PATTERN)?,
            byte_level(false),
        ])),
        other => {
            return Err(tok_err(format!(
                "tokenizer.ggml.pre '{other}' is not supported (known: default, gpt-2, smollm, \
                 starcoder, refact, codeshell, llama-bpe, qwen2); put the model's tokenizer.json \
                 beside it and use Tokenizer::from_file"
            )))
        }
    })
}

/// `bos_token` etc. in tokenizer_config.json: a string or `{"content": ...}`.
pub(crate) fn config_token(json: &serde_json::Value, key: &str) -> Option<String> {
    match json.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// GPT-2's byte <-> printable-char table: bytes that are printable Latin-1
/// map to themselves, the rest to U+0100 onwards, in byte order.
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    table
}

/// Bytes per token exactly as the HF ByteLevel decoder produces them: map
/// every char back to its byte, or, if any char has no byte, use the piece's
/// UTF-8 as is (this is how special tokens like `<|im_start|>` come through).
fn byte_level_table(pieces: &[Option<String>]) -> Vec<Vec<u8>> {
    let table = byte_to_char_table();
    let char_to_byte: HashMap<char, u8> = table
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    pieces
        .iter()
        .map(|p| {
            let Some(p) = p else { return Vec::new() };
            p.chars()
                .map(|c| char_to_byte.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .unwrap_or_else(|| p.as_bytes().to_vec())
        })
        .collect()
}

/// Incremental detokenisation for streaming output.
///
/// [`StreamDecoder::push`] returns only complete text: a multi-byte character
/// split across tokens (emoji are often 2-4 tokens) is held back until its
/// last byte arrives, so the concatenation of everything pushed plus
/// [`StreamDecoder::flush`] equals [`Tokenizer::decode`] of all the ids.
pub struct StreamDecoder {
    tok: Tokenizer,
    skip_special: bool,
    /// Byte-level path: bytes not yet emitted (an incomplete UTF-8 tail).
    pending: Vec<u8>,
    /// Generic path: state for tokenizers' own streaming step.
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

impl StreamDecoder {
    pub fn new(tok: Tokenizer, skip_special: bool) -> Self {
        StreamDecoder {
            tok,
            skip_special,
            pending: Vec::new(),
            ids: Vec::new(),
            prefix: String::new(),
            prefix_index: 0,
        }
    }

    /// Feeds one id; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.tok.check_id(id)?;
        if self.tok.inner.token_bytes.is_none() {
            return tokenizers::tokenizer::step_decode_stream(
                &self.tok.inner.hf,
                vec![id],
                self.skip_special,
                &mut self.ids,
                &mut self.prefix,
                &mut self.prefix_index,
            )
            .map_err(|e| hf_err("stream decoding", e));
        }
        if self.skip_special && self.tok.is_special(id) {
            return Ok(None);
        }
        if let Some(b) = self.tok.token_bytes(id) {
            self.pending.extend_from_slice(b);
        }
        let out = take_complete_utf8(&mut self.pending);
        Ok((!out.is_empty()).then_some(out))
    }

    /// Returns whatever is still held back (an incomplete character becomes
    /// U+FFFD, as in [`Tokenizer::decode`]) and resets the decoder.
    pub fn flush(&mut self) -> Option<String> {
        let out = if self.tok.inner.token_bytes.is_some() {
            String::from_utf8_lossy(&self.pending).into_owned()
        } else {
            let all = self
                .tok
                .inner
                .hf
                .decode(&self.ids, self.skip_special)
                .unwrap_or_default();
            all.strip_prefix(self.prefix.as_str())
                .map(str::to_string)
                .unwrap_or_default()
        };
        self.reset();
        (!out.is_empty()).then_some(out)
    }

    /// Forgets everything pushed so far.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.ids.clear();
        self.prefix.clear();
        self.prefix_index = 0;
    }
}

/// Removes and returns the longest prefix of `buf` that can be emitted now:
/// valid UTF-8, with invalid sequences replaced by U+FFFD exactly where
/// `String::from_utf8_lossy` would replace them. An incomplete sequence at
/// the very end stays in `buf`, waiting for more bytes.
fn take_complete_utf8(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&buf[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = buf.len();
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // valid_up_to() bytes are UTF-8 by definition.
                out.push_str(std::str::from_utf8(&buf[start..start + valid]).unwrap_or(""));
                match e.error_len() {
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        start += valid + bad;
                    }
                    None => {
                        start += valid;
                        break;
                    }
                }
            }
        }
    }
    buf.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_matching_gpt2() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'\t' as usize], 'ĉ');
        assert_eq!(t[b'A' as usize], 'A');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn utf8_streaming_holds_incomplete_and_replaces_invalid() {
        let mut buf = vec![b'a', 0xF0, 0x9F];
        assert_eq!(take_complete_utf8(&mut buf), "a");
        assert_eq!(buf, vec![0xF0, 0x9F]);
        buf.extend_from_slice(&[0x98, 0x80]);
        assert_eq!(take_complete_utf8(&mut buf), "😀");
        assert!(buf.is_empty());
        // A stray continuation byte is invalid now, not "incomplete".
        let mut buf = vec![0x80, b'x', 0xE2];
        assert_eq!(take_complete_utf8(&mut buf), "\u{FFFD}x");
        assert_eq!(buf, vec![0xE2]);
        // Same replacement as from_utf8_lossy for a broken sequence.
        let bytes = vec![0xE2, 0x82, b'z', 0xC0, 0xAF];
        let mut buf = bytes.clone();
        assert_eq!(
            take_complete_utf8(&mut buf),
            String::from_utf8_lossy(&bytes)
        );
    }
}
