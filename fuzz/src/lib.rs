//! What each fuzz target runs, shared with `tests/hostile.rs`, which replays
//! the regression corpus (`tests/hostile/`) through the same code in CI.
//! Every function returns the errors it met, in order, so a regression test
//! can assert the named error; a panic, hang or unbounded allocation is the
//! bug the fuzzers look for.

use arbitrary::Arbitrary;
use lottery_engine::formats::{self, WeightFormat, WeightLayout};
use lottery_models::arch::llama::{weight_format, LlamaConfig};
use lottery_models::arch::llama_cpu::LlamaCpu;
use lottery_models::arch::support::check_llama_gguf;
use lottery_models::load::hf::gguf_from_hf_dir;
use lottery_models::load::{ChatMessage, ChatTemplate, GgufFile, GgufWriter, MetaValue, Tokenizer};
use lottery_models::runtime::solve::{parse_action, run_call, Action};
use lottery_models::runtime::{calculator, pending_inline_call, Calculator, Memory, Tool};
use std::path::Path;

/// Tensors larger than this are not decoded (the reader's checks are what
/// is fuzzed; decoding big tensors only slows the fuzzer down).
const MAX_DECODE: u64 = 1 << 20;

fn note<T, E: std::fmt::Display>(errs: &mut Vec<String>, r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(e.to_string());
            None
        }
    }
}

/// A model file as `lottery info` / `lottery run` read it before the GPU:
/// header, metadata, tensor infos and data offsets; the config and the
/// refusal checks; and every tensor decoded on the CPU and repacked into
/// GPU words. The tokenizer and the chat template a file describes have
/// targets of their own (building them costs more than the rest together,
/// and a target of its own reaches deeper into each).
pub fn gguf(data: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(g) = note(&mut errs, GgufFile::from_bytes(data.to_vec())) else {
        return errs;
    };
    for (k, v) in g.metadata() {
        let _ = (k.len(), v.describe());
    }
    for t in g.tensors() {
        let Some(bytes) = note(&mut errs, g.tensor_data(t)) else {
            continue;
        };
        let (n, k) = (t.n_rows(), t.row_len());
        if n.saturating_mul(k) > MAX_DECODE {
            continue;
        }
        if let Some(fmt) = note(&mut errs, weight_format(&t.name, t.ggml_type)) {
            let mut out = vec![0f32; (n * k) as usize];
            note(&mut errs, formats::dequantize(fmt, bytes, &mut out));
            for layout in [WeightLayout::Rows, WeightLayout::Tiled] {
                note(
                    &mut errs,
                    formats::repack_as(fmt, bytes, n as usize, k as usize, layout),
                );
            }
        }
    }
    if let Some(cfg) = note(&mut errs, LlamaConfig::from_gguf(&g)) {
        note(&mut errs, check_llama_gguf(&g, &cfg));
        if g.tensors().iter().all(|t| t.n_elements() <= MAX_DECODE) {
            note(&mut errs, LlamaCpu::load(&g));
        }
    }
    errs
}

/// The separator between the files of an `hf_dir` input.
pub const HF_MARK: &[u8] = b"\n--8<--\n";
/// The files of an `hf_dir` input, in order.
pub const HF_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-00002-of-00002.safetensors",
];

/// A Hugging Face model directory: config.json, model.safetensors (header
/// and data offsets) and, when present, an index with a second shard. The
/// input is those files separated by [`HF_MARK`], written into `dir`.
pub fn hf_dir(data: &[u8], dir: &Path) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(HF_MARK.len()).position(|w| w == HF_MARK) {
        parts.push(&rest[..i]);
        rest = &rest[i + HF_MARK.len()..];
    }
    parts.push(rest);
    for (i, name) in HF_FILES.iter().enumerate() {
        let p = dir.join(name);
        match parts.get(i) {
            Some(bytes) => std::fs::write(&p, bytes).expect("writing the fuzz directory"),
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    let mut errs = Vec::new();
    note(&mut errs, gguf_from_hf_dir(dir, None));
    errs
}

/// A metadata value of the types tokenizer keys are found with.
#[derive(Arbitrary, Debug)]
pub enum Val {
    U32(u32),
    I32(i32),
    Str(String),
    Bool(bool),
    F32(f32),
}

fn meta(v: &Val) -> MetaValue {
    match v {
        Val::U32(x) => MetaValue::U32(*x),
        Val::I32(x) => MetaValue::I32(*x),
        Val::Str(s) => MetaValue::String(s.clone()),
        Val::Bool(b) => MetaValue::Bool(*b),
        Val::F32(f) => MetaValue::F32(*f),
    }
}

/// The `tokenizer.ggml.*` keys of a GGUF file, structure-aware.
#[derive(Arbitrary, Debug)]
pub struct TokInput {
    pub model: Option<String>,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    /// Merges built from pairs of token indices, so some are valid.
    pub merge_pairs: Vec<(u8, u8)>,
    pub types: Option<Vec<Val>>,
    pub bos: Option<Val>,
    pub eos: Option<Val>,
    pub unk: Option<Val>,
    pub pad: Option<Val>,
    pub add_bos: Option<Val>,
    pub text: String,
    pub ids: Vec<u32>,
}

/// The tokenizer a GGUF file describes: the keys are written as a GGUF,
/// read back, and the tokenizer built from them encodes and decodes.
pub fn tokenizer(input: &TokInput) -> Vec<String> {
    let mut errs = Vec::new();
    let mut w = GgufWriter::new();
    let model = input.model.clone().unwrap_or_else(|| "gpt2".into());
    let mut add = |w: &mut GgufWriter, k: &str, v: MetaValue| {
        note(&mut errs, w.add_metadata(k, v));
    };
    add(&mut w, "tokenizer.ggml.model", MetaValue::String(model));
    if let Some(p) = &input.pre {
        add(&mut w, "tokenizer.ggml.pre", MetaValue::String(p.clone()));
    }
    let tokens = input
        .tokens
        .iter()
        .map(|t| MetaValue::String(t.clone()))
        .collect();
    add(&mut w, "tokenizer.ggml.tokens", MetaValue::Array(tokens));
    let mut merges: Vec<MetaValue> = input
        .merges
        .iter()
        .map(|m| MetaValue::String(m.clone()))
        .collect();
    if !input.tokens.is_empty() {
        let n = input.tokens.len();
        for (a, b) in &input.merge_pairs {
            let (a, b) = (
                &input.tokens[*a as usize % n],
                &input.tokens[*b as usize % n],
            );
            merges.push(MetaValue::String(format!("{a} {b}")));
        }
    }
    add(&mut w, "tokenizer.ggml.merges", MetaValue::Array(merges));
    if let Some(types) = &input.types {
        add(
            &mut w,
            "tokenizer.ggml.token_type",
            MetaValue::Array(types.iter().map(meta).collect()),
        );
    }
    for (key, v) in [
        ("tokenizer.ggml.bos_token_id", &input.bos),
        ("tokenizer.ggml.eos_token_id", &input.eos),
        ("tokenizer.ggml.unknown_token_id", &input.unk),
        ("tokenizer.ggml.padding_token_id", &input.pad),
        ("tokenizer.ggml.add_bos_token", &input.add_bos),
    ] {
        if let Some(v) = v {
            add(&mut w, key, meta(v));
        }
    }
    let Some(g) = note(&mut errs, GgufFile::from_bytes(w.to_bytes())) else {
        return errs;
    };
    let Some(tok) = note(&mut errs, Tokenizer::from_gguf(&g)) else {
        return errs;
    };
    if let Some(ids) = note(&mut errs, tok.encode(&input.text)) {
        note(&mut errs, tok.decode(&ids, false));
    }
    note(&mut errs, tok.decode(&input.ids, true));
    note(&mut errs, tok.decode(&input.ids, false));
    errs
}

/// Chat template rendering: the input is the template source; it renders a
/// small conversation with tools, as a chat turn does, under the limits.
pub fn chat_template(data: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(src) = note(&mut errs, std::str::from_utf8(data)) else {
        return errs;
    };
    let Some(t) = note(&mut errs, ChatTemplate::new(src, "<s>", "</s>")) else {
        return errs;
    };
    let msgs = [
        ChatMessage::system("Be brief."),
        ChatMessage::user("What is 2+2?"),
        ChatMessage::assistant("4"),
        ChatMessage::user("And 3*3?"),
    ];
    let tools = serde_json::json!({"tools": [{"type": "function", "function": {
        "name": "calculator", "description": "exact arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]});
    note(&mut errs, t.render(&msgs, true));
    note(&mut errs, t.render_with(&msgs, false, &tools));
    // A render runs on its own thread, which turns a panic into an error;
    // here it must stay a failure.
    assert!(
        !errs.iter().any(|e| e.contains("the render panicked")),
        "{errs:?}"
    );
    errs
}

/// The quantized tensor decoders: a format, a shape and block bytes, decoded
/// on the CPU (the reference every kernel is checked against) and repacked
/// into the words the GPU kernels read.
pub fn tensor_decode(data: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    if data.len() < 5 {
        return errs;
    }
    let fmt = WeightFormat::ALL[data[0] as usize % WeightFormat::ALL.len()];
    let n = u16::from_le_bytes([data[1], data[2]]) as usize % 64;
    let k = u16::from_le_bytes([data[3], data[4]]) as usize % 1024;
    let bytes = &data[5..];
    let mut out = vec![0f32; n * k];
    note(&mut errs, formats::dequantize(fmt, bytes, &mut out));
    for layout in [WeightLayout::Rows, WeightLayout::Tiled] {
        note(&mut errs, formats::repack_as(fmt, bytes, n, k, layout));
    }
    // The whole input as one row of as many whole blocks as it holds.
    let blocks = bytes.len() / fmt.block_bytes();
    let mut row = vec![0f32; blocks * fmt.block_size()];
    note(&mut errs, formats::dequantize(fmt, bytes, &mut row));
    errs
}

/// The tool-call parsers: an action as the model writes it, run against the
/// built-in calculator and memory (twice: the second call sees what the
/// first stored), and the inline `<<EXPR=` style.
pub fn tool_call(data: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(text) = note(&mut errs, std::str::from_utf8(data)) else {
        return errs;
    };
    let memory = Memory::default();
    let tools: [&dyn Tool; 2] = [&Calculator, &memory];
    if let Some(Action::Call { tool, arguments }) = note(&mut errs, parse_action(text)) {
        note(&mut errs, run_call(&tools, &tool, &arguments));
        note(&mut errs, run_call(&tools, &tool, &arguments));
    }
    if let Some(expr) = pending_inline_call(text) {
        note(&mut errs, calculator::evaluate(expr));
    }
    note(&mut errs, calculator::evaluate(text));
    errs
}
