//! The `lottery` command line.

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};
use lottery::engine::Tier;
use lottery::models::load::GgufFile;
use lottery::{
    ChatMessage, GenerateOptions, Gpu, GpuOptions, KvDtype, KvPolicy, KvTypes, Model,
    SamplerSettings, Session, SessionOptions,
};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

mod bench;
mod doctor;
mod embed;
mod eval;
mod prune;
mod solve;

#[derive(Parser)]
#[command(
    name = "lottery",
    version,
    about = "Run small compressed language models on any GPU (wgpu + WGSL)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text from a prompt.
    Run(RunArgs),
    /// Chat interactively (history through the model's chat template).
    Chat(ChatArgs),
    /// Show a GGUF file's metadata and tensors.
    Info {
        /// Model file (default: the SmolLM2 model in models-cache/).
        path: Option<PathBuf>,
        /// Print every tensor (default: the first 24).
        #[arg(long)]
        all: bool,
    },
    /// Time to first token, prefill and decode speed, and weight bandwidth.
    Bench(bench::BenchArgs),
    /// List the GPU adapters this machine exposes.
    Adapters,
    /// Re-quantize a GGUF model to another weight format.
    Quantize(QuantizeArgs),
    /// Prune a GGUF model's layer weights into a sparse format (magnitude,
    /// Wanda or SparseGPT; unstructured or N:M), kept values quantized.
    Prune(prune::PruneArgs),
    /// Write a GGUF model as an HF checkpoint directory (safetensors).
    Convert(ConvertArgs),
    /// List adapters and run the kernel conformance suite (a report for bug reports).
    Doctor(doctor::DoctorArgs),
    /// Perplexity of a text file, llama.cpp's method (chunks of --ctx, each
    /// scored on its second half).
    Perplexity(PerplexityArgs),
    /// Sentence embeddings (all-MiniLM-L6-v2 by default) on the GPU.
    Embed(embed::EmbedArgs),
    /// Chunk and embed text files into a knowledge base (creates or adds to it).
    Index(embed::IndexArgs),
    /// The chunks of a knowledge base closest to a query (exact cosine top-k).
    Search(embed::SearchArgs),
    /// Sentence-embedding throughput and knowledge-base search time.
    BenchEmbed(embed::BenchEmbedArgs),
    /// Capability tasks (CAPABILITY.md) under one model, cache and tool setting.
    Eval(eval::EvalArgs),
    /// Solve a task with the runtime's loop: the model calls tools (calculator,
    /// memory, prompt_search, search) through constrained JSON actions.
    Solve(solve::SolveArgs),
}

/// Which adapter and capability tier to run on (shared by every command that
/// opens a GPU).
#[derive(Args, Clone)]
pub struct GpuArgs {
    /// Backend: vulkan, metal, dx12, gl (default: $LOTTERY_BACKEND or the best available).
    #[arg(long)]
    pub backend: Option<String>,
    /// Adapter index within the backend (see `lottery adapters`).
    #[arg(long)]
    pub adapter: Option<usize>,
    /// Capability tier: portable, f16, subgroup or full (default: the best the adapter has, or $LOTTERY_TIER).
    #[arg(long)]
    pub tier: Option<String>,
}

impl GpuArgs {
    /// Opens the device, asking for a per-binding limit above WebGPU's
    /// default only when `binding` needs it.
    pub fn open(&self, binding: Option<u64>) -> Result<Gpu> {
        Ok(Gpu::new(&GpuOptions {
            backend: self.backend.clone(),
            adapter_index: self.adapter,
            storage_binding_limit: binding,
            tier: match &self.tier {
                Some(t) => Some(
                    Tier::parse(t)
                        .ok_or_else(|| anyhow!("--tier must be portable, f16, subgroup or full"))?,
                ),
                None => None,
            },
        })?)
    }
}

const KV_TYPES: [&str; 8] = [
    "f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "iq4_nl", "kivi2",
];

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// GGUF file or HF checkpoint directory (default: $LOTTERY_MODEL or
    /// models-cache/SmolLM2-135M-Instruct.Q4_1.gguf).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Re-quantize every matrix at load time (e.g. q4_k, q8_0).
    #[arg(long)]
    pub quantize: Option<String>,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// KV cache storage for keys and values: f32, f16, q8_0, q4_0, q4_1,
    /// q5_0, iq4_nl or kivi2 (2-bit: keys per channel over groups of 32
    /// tokens, values per token; block types need head_dim a multiple of 32).
    #[arg(long, default_value = "f16", value_parser = KV_TYPES)]
    pub kv: String,
    /// Storage for keys only (overrides --kv; keys are the more sensitive).
    #[arg(long, value_parser = KV_TYPES)]
    pub kv_k: Option<String>,
    /// Storage for values only (overrides --kv).
    #[arg(long, value_parser = KV_TYPES)]
    pub kv_v: Option<String>,
    /// Store block-type K/V rows as they are, not turned by a Hadamard
    /// rotation first (the rotation spreads outlier channels; keep it on
    /// unless comparing).
    #[arg(long)]
    pub kv_no_rotate: bool,
    /// Store block-type keys as they are, not less the key mean of the
    /// first prompt batch (exact for attention; centring only lowers the
    /// quantization error: keep it on unless comparing).
    #[arg(long)]
    pub kv_no_centre: bool,
    /// Quantize slot 0 (the attention sink) of block-type keys and values
    /// like every other row, instead of also keeping it exact (f32, one row
    /// per KV head: keep it on unless comparing).
    #[arg(long)]
    pub kv_no_sink: bool,
    /// Which positions the cache keeps: full; sink-window:S,W (the first S
    /// and last W positions in a ring, so generation runs past --ctx);
    /// quest:P,T (attend to the T best pages of P positions per decode
    /// step); or snapkv:B[,W,K] (after the prompt, keep per KV head the B
    /// positions its last W queries attend to most, pooled over K, plus the
    /// window; defaults W 32, K 7).
    #[arg(long, default_value = "full")]
    pub kv_policy: String,
    /// Queue each decode step before reading the previous step's token,
    /// feeding it the sampled token on the GPU, so recording overlaps
    /// execution: auto (on except on CPU adapters, where it measured
    /// slower), on or off.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub run_ahead: String,
    /// Context length (0: the model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    pub ctx: u32,
}

impl ModelArgs {
    pub fn load(&self, quiet: bool) -> Result<Arc<Model>> {
        let path = match &self.model {
            Some(p) => p.clone(),
            None => lottery::default_model_path().ok_or_else(|| {
                anyhow!("no model given and the default model is not downloaded: run `scripts/fetch-model.sh` (fetches SmolLM2-135M-Instruct Q4_1 into models-cache/), or pass --model FILE.gguf")
            })?,
        };
        // WebGPU's default per-binding limit (128 MiB) unless a weight needs
        // more (an HF directory is sized when it is converted, at load).
        let need = if path.is_dir() {
            0
        } else {
            GgufFile::open(&path)
                .and_then(|g| lottery::models::arch::llama::max_binding_bytes(&g))
                .with_context(|| format!("reading {}", path.display()))?
        };
        let gpu = self.gpu.open((need > 128 << 20).then_some(need))?;
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(1)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(
            path.file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
        let quantize = match &self.quantize {
            Some(t) => Some(
                lottery::models::quantize::parse_format(t)
                    .ok_or_else(|| anyhow!("--quantize: unknown type `{t}`"))?,
            ),
            None => None,
        };
        let model = Model::load_with(Arc::new(gpu), &path, quantize, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .with_context(|| format!("loading {}", path.display()))?;
        bar.finish_and_clear();
        Ok(Arc::new(model))
    }

    /// The K and V storage types --kv, --kv-k and --kv-v select.
    pub fn kv_types(&self) -> Result<KvTypes> {
        let parse = |s: &str| KvDtype::parse(s).ok_or_else(|| anyhow!("unknown KV type `{s}`"));
        let both = parse(&self.kv)?;
        Ok(KvTypes {
            rotate: !self.kv_no_rotate,
            centre: !self.kv_no_centre,
            sink: !self.kv_no_sink,
            k: self.kv_k.as_deref().map(parse).transpose()?.unwrap_or(both),
            v: self.kv_v.as_deref().map(parse).transpose()?.unwrap_or(both),
        })
    }

    pub fn kv_policy(&self) -> Result<KvPolicy> {
        Ok(KvPolicy::parse(&self.kv_policy)?)
    }

    pub fn session(&self, model: &Arc<Model>) -> Result<Session> {
        let kv = self.kv_types()?;
        Ok(Session::new(
            model.clone(),
            SessionOptions {
                ctx: self.ctx,
                kv,
                kv_policy: self.kv_policy()?,
                run_ahead: match self.run_ahead.as_str() {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                },
                ..Default::default()
            },
        )?)
    }
}

#[derive(Args, Clone)]
pub struct SampleArgs {
    /// 0 = greedy.
    #[arg(long, short = 't', default_value_t = 0.0)]
    temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
}

impl SampleArgs {
    fn options(&self, n: usize) -> Result<GenerateOptions> {
        if !(self.top_p > 0.0 && self.top_p <= 1.0)
            || !(0.0..1.0).contains(&self.min_p)
            || self.temperature < 0.0
            || self.repeat_penalty <= 0.0
        {
            return Err(anyhow!("sampling: need temperature >= 0, 0 < top-p <= 1, 0 <= min-p < 1, repeat-penalty > 0"));
        }
        Ok(GenerateOptions {
            max_tokens: n,
            sampler: SamplerSettings {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repeat_penalty,
                seed: self.seed,
            },
            stop: self.stop.clone(),
            stop_at_eos: !self.ignore_eos,
        })
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// The prompt (special tokens such as <|im_start|> are parsed).
    #[arg(long, short)]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    n: usize,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System prompt for --chat (default: the template's own).
    #[arg(long)]
    system: Option<String>,
    /// Print one JSON object (prompt_ids, ids, text, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Tools the runtime answers inline (comma-separated). `calculator`:
    /// whenever the text ends with `<<EXPR=`, the exact value and `>>` are
    /// fed through the cache (GSM8K's format) and decoding goes on.
    #[arg(long, value_delimiter = ',', value_parser = ["calculator"])]
    tools: Vec<String>,
    /// Constrain the output to a JSON value of this JSON Schema (a file).
    #[arg(long, group = "constrain")]
    json_schema: Option<PathBuf>,
    /// Constrain the output to match this regular expression.
    #[arg(long, group = "constrain")]
    regex: Option<String>,
    /// Constrain the output to this Lark grammar (a file, llguidance's dialect).
    #[arg(long, group = "constrain")]
    grammar: Option<PathBuf>,
}

impl RunArgs {
    fn grammar(&self) -> Result<Option<lottery::models::constrain::Grammar>> {
        use lottery::models::constrain::Grammar;
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        Ok(if let Some(p) = &self.json_schema {
            let v = serde_json::from_str(&read(p)?)
                .with_context(|| format!("{}: not JSON", p.display()))?;
            Some(Grammar::JsonSchema(v))
        } else if let Some(r) = &self.regex {
            Some(Grammar::Regex(r.clone()))
        } else if let Some(p) = &self.grammar {
            Some(Grammar::Lark(read(p)?))
        } else {
            None
        })
    }
}

#[derive(Args)]
struct ConvertArgs {
    /// Source GGUF.
    #[arg(long)]
    model: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Matrix dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

#[derive(Args)]
struct QuantizeArgs {
    /// Source GGUF.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output GGUF.
    #[arg(long)]
    out: PathBuf,
    /// Target format: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl q4_k q5_k q6_k.
    #[arg(long = "type")]
    ty: String,
    /// Per-tensor override NAME_SUBSTRING=TYPE (repeatable), e.g. token_embd=q8_0.
    #[arg(long = "override")]
    overrides: Vec<String>,
    /// Activation-aware mode: calibration text run through the model on the
    /// GPU to weight each input channel (AWQ-style scales).
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Tokens of calibration text to use.
    #[arg(long, default_value_t = 512)]
    calib_tokens: usize,
    /// With --calibration: awq (per-channel scales folded into the norms) or
    /// gptq (error feedback through each input's Hessian; q4_0, q4_1, q5_0,
    /// q5_1, iq4_nl, q8_0).
    /// awq-gptq: the AWQ scales first, then GPTQ on the scaled model.
    #[arg(long, default_value = "awq", value_parser = ["awq", "gptq", "awq-gptq"], requires = "calibration")]
    method: String,
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score.
    #[arg(long)]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(long = "chunk", default_value_t = 512)]
    chunk: usize,
    /// Score every position of each chunk instead of its second half.
    #[arg(long)]
    all_positions: bool,
    /// Also run the text with this cache type for K and V (for instance
    /// f16) and report the mean KL divergence of this run's next-token
    /// distributions from it: a far less noisy measure of what a cache
    /// setting changes than the difference of two perplexities.
    #[arg(long, value_name = "TYPE")]
    kl_vs_kv: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    #[arg(short = 'n', long = "max-tokens", default_value_t = 512)]
    n: usize,
    #[arg(long)]
    system: Option<String>,
    /// Answer every message with the runtime's loop (`lottery solve`) and
    /// these tools (comma-separated): calculator, memory, prompt_search
    /// (over --file), search (over --kb). The tool calls are shown as they
    /// happen; memory lasts the whole conversation.
    #[arg(long, value_delimiter = ',', value_parser = ["calculator", "memory", "prompt_search", "search"])]
    tools: Vec<String>,
    /// A document every message may ask about (shown whole when short, else
    /// read through prompt_search).
    #[arg(long, requires = "tools")]
    file: Option<PathBuf>,
    /// Knowledge base for `search` (`lottery index`).
    #[arg(long, requires = "tools")]
    kb: Option<PathBuf>,
    /// Sentence-transformers directory for search and prompt_search.
    #[arg(long, requires = "tools")]
    embed_model: Option<PathBuf>,
    /// Tool calls per message before only an answer is allowed.
    #[arg(long, default_value_t = 6, requires = "tools")]
    max_calls: usize,
}

pub fn main() -> Result<()> {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // wgpu's GL path warns without it; a private temp dir is enough.
        let dir = std::env::temp_dir().join("lottery-xdg");
        let _ = std::fs::create_dir_all(&dir);
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
    match Cli::parse().cmd {
        Cmd::Run(a) => run(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Info { path, all } => info(path, all),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Doctor(a) => doctor::doctor(a),
        Cmd::Perplexity(a) => perplexity(a),
        Cmd::Quantize(a) => quantize(a),
        Cmd::Prune(a) => prune::prune(a),
        Cmd::Convert(a) => convert(a),
        Cmd::Embed(a) => embed::embed(a),
        Cmd::Index(a) => embed::index(a),
        Cmd::Search(a) => embed::search(a),
        Cmd::BenchEmbed(a) => embed::bench_embed(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Solve(a) => solve::solve(a),
        Cmd::Adapters => {
            for (i, a) in lottery::engine::gpu::list_adapters(None)?
                .iter()
                .enumerate()
            {
                println!(
                    "{i}: {} ({}, {}, {}) shader-f16={} subgroups={} timestamps={}",
                    a.name,
                    a.backend,
                    a.device_type,
                    a.driver,
                    a.shader_f16,
                    a.subgroups,
                    a.timestamps
                );
            }
            Ok(())
        }
    }
}

fn chat_prompt(model: &Model, messages: &[ChatMessage]) -> Result<String> {
    let t = model.chat_template.as_ref().ok_or_else(|| {
        anyhow!(
            "this model has no usable chat template ({}); run without --chat",
            model.chat_template_error.as_deref().unwrap_or("none found")
        )
    })?;
    Ok(t.render(messages, true)?)
}

fn run(a: RunArgs) -> Result<()> {
    let opts = a.sample.options(a.n)?;
    let model = a.model.load(a.json)?;
    let text = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::system(s.clone()));
        }
        msgs.push(ChatMessage::user(a.prompt.clone()));
        chat_prompt(&model, &msgs)?
    } else {
        a.prompt.clone()
    };
    let ids = model.tokenizer.encode(&text)?;
    let mut session = a.model.session(&model)?;
    let mut constraint = match a.grammar()? {
        Some(g) => Some(model.constraint(&g)?),
        None => None,
    };
    let t0 = Instant::now();
    let mut out = std::io::stdout();
    let json = a.json;
    let mut calls = Vec::new();
    let print = |e: &lottery::models::TokenEvent| {
        if !json {
            print!("{}", e.piece);
            let _ = out.flush();
        }
        true
    };
    let g = if let Some(c) = constraint.as_mut() {
        if !a.tools.is_empty() {
            return Err(anyhow!("--tools and a grammar do not combine yet"));
        }
        let mut print = print;
        session.generate_constrained(&ids, &opts, c, |e| {
            print(e);
            lottery::models::HookAction::Continue
        })?
    } else if a.tools.iter().any(|t| t == "calculator") {
        session.generate_with_hook(
            &ids,
            &opts,
            lottery::models::runtime::inline_calculator(&mut calls, print),
        )?
    } else {
        let mut print = print;
        session.generate_with_hook(&ids, &opts, |e| {
            print(e);
            lottery::models::HookAction::Continue
        })?
    };
    let total = t0.elapsed().as_secs_f64();
    if json {
        let v = serde_json::json!({
            "prompt_ids": g.prompt_ids,
            "ids": g.ids,
            "text": g.text,
            "injected_tokens": g.injected,
            "tool_calls": calls.iter().map(|c| serde_json::json!({
                "tool": "calculator",
                "expression": c.expression,
                "result": c.result.as_ref().ok(),
                "error": c.result.as_ref().err(),
            })).collect::<Vec<_>>(),
            "stop": format!("{:?}", g.stop),
            "timings": {
                "prompt_tokens": g.prompt_ids.len(),
                "generated_tokens": g.ids.len(),
                "ttft_s": g.ttft_s,
                "decode_s": g.decode_s,
                "total_s": total,
                "prefill_tokens_per_s": g.prefill_tokens_per_s(),
                "decode_tokens_per_s": g.decode_tokens_per_s(),
            },
            "kv": {
                "types": session.kv_types().label(),
                "policy": session.kv_policy().label(),
                "bytes": session.kv_bytes(),
                "positions": session.position(),
                "positions_kept": session.kv_kept(),
            },
            "adapter": model.gpu.adapter.name,
            "backend": model.gpu.adapter.backend,
            "constraint": constraint.as_ref().map(|c| serde_json::json!({
                "masks": c.masks,
                "mask_us_per_token": 1e6 * c.mask_s / c.masks.max(1) as f64,
            })),
        });
        println!("{v}");
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens, {} generated; ttft {:.2}s, decode {:.1} tok/s on {} ({})]",
            g.prompt_ids.len(),
            g.ids.len(),
            g.ttft_s,
            g.decode_tokens_per_s(),
            model.gpu.adapter.name,
            model.gpu.adapter.backend
        );
    }
    Ok(())
}

fn chat(a: ChatArgs) -> Result<()> {
    if !a.tools.is_empty() {
        return chat_with_tools(a);
    }
    let opts = a.sample.options(a.n)?;
    let model = a.model.load(false)?;
    let mut session = a.model.session(&model)?;
    let mut msgs: Vec<ChatMessage> = a
        .system
        .iter()
        .map(|s| ChatMessage::system(s.clone()))
        .collect();
    eprintln!(
        "chatting with {} on {} ({}). Empty line or Ctrl-D to quit.",
        model.path.display(),
        model.gpu.adapter.name,
        model.gpu.adapter.backend
    );
    while let Some(line) = read_message()? {
        msgs.push(ChatMessage::user(line));
        let ids = model.tokenizer.encode(&chat_prompt(&model, &msgs)?)?;
        // Reuse the cache for the shared prefix of the conversation.
        let keep = session.rewind_to_prefix(&ids)?;
        let mut out = std::io::stdout();
        let g = session.generate(&ids[keep..], &opts, |_, piece| {
            print!("{piece}");
            let _ = out.flush();
            true
        })?;
        println!();
        msgs.push(ChatMessage::assistant(g.text.trim().to_string()));
    }
    Ok(())
}

/// The next chat message from stdin, after a prompt; None at an empty
/// line or the end of input.
fn read_message() -> Result<Option<String>> {
    eprint!("> ");
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(line.trim().to_string()))
}

/// `lottery chat --tools`: every message is a task for the runtime's loop;
/// the tools (and memory's values) last the conversation. Without --file,
/// the last two exchanges are the task's context, shown before it, so that
/// a follow-up can say "it"; they are not the task, so what they mention
/// neither makes a tool a source to read first nor joins the question the
/// reader answers. With --file, the document is the context.
fn chat_with_tools(a: ChatArgs) -> Result<()> {
    use lottery::models::runtime::solve::{solve as run_loop, SolveOptions};
    let context = match &a.file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        None => None,
    };
    let model = a.model.load(false)?;
    let mut session = a.model.session(&model)?;
    let tools = solve::build_tools(
        &a.tools,
        context.as_deref(),
        a.kb.as_deref(),
        a.embed_model.as_deref(),
    )?;
    let refs: Vec<&dyn lottery::models::runtime::Tool> = tools.iter().map(|t| t.as_ref()).collect();
    let opts = SolveOptions {
        max_calls: a.max_calls,
        ..Default::default()
    };
    eprintln!(
        "chatting with {} and tools {} on {} ({}). Empty line or Ctrl-D to quit.",
        model.path.display(),
        a.tools.join(", "),
        model.gpu.adapter.name,
        model.gpu.adapter.backend
    );
    let mut earlier: Vec<(String, String)> = Vec::new();
    while let Some(line) = read_message()? {
        // The last exchanges that fit what the loop shows whole (longer
        // would need prompt_search).
        let mut history = None;
        for from in 0..earlier.len() {
            let mut h = String::from("Earlier in this conversation:");
            for (q, ans) in &earlier[from..] {
                h.push_str(&format!("\n{q} -> {ans}"));
            }
            if model.tokenizer.encode(&h)?.len() <= opts.inline_context_tokens {
                history = Some(h);
                break;
            }
        }
        let ctx = context.as_deref().or(history.as_deref());
        let sol = run_loop(&mut session, &refs, &line, ctx, &opts)?;
        for s in &sol.trace {
            if matches!(s.kind.as_str(), "call" | "check_call") {
                eprintln!(
                    "  [{} {}] -> {}",
                    s.tool.as_deref().unwrap_or("?"),
                    s.arguments,
                    s.result.as_deref().or(s.error.as_deref()).unwrap_or("")
                );
            }
        }
        let answer = sol
            .answer
            .unwrap_or_else(|| format!("(no answer within {} calls)", a.max_calls));
        println!("{answer}");
        earlier.push((line, answer));
        // Two exchanges are enough for "it" and keep the task short.
        if earlier.len() > 2 {
            earlier.remove(0);
        }
    }
    Ok(())
}

fn info(path: Option<PathBuf>, all: bool) -> Result<()> {
    let path = path.or_else(lottery::default_model_path).ok_or_else(|| {
        anyhow!("give a GGUF path (or run scripts/fetch-model.sh for the default model)")
    })?;
    let g = GgufFile::open(&path)?;
    println!(
        "{}: GGUF v{}, {} bytes, {} metadata keys, {} tensors",
        path.display(),
        g.version(),
        g.file_len(),
        g.metadata().len(),
        g.tensors().len()
    );
    for (k, v) in g.metadata() {
        println!("  {k} ({}) = {v}", v.describe());
    }
    match lottery::models::arch::llama::LlamaConfig::from_gguf(&g) {
        Ok(c) => println!(
            "model: {}\n  {} layers, d_model {}, {}/{} heads of {}, ff {}, vocab {}, rope base {}, context {}{}",
            c.family(),
            c.n_layer,
            c.d_model,
            c.n_head,
            c.n_kv_head,
            c.head_dim,
            c.ff,
            c.vocab,
            c.rope_theta,
            c.ctx_train,
            match c.attn_window {
                Some(w) => format!(" (attending to the last {w} positions)"),
                None => String::new(),
            }
        ),
        Err(e) => println!("model: refused: {e}"),
    }
    let mut by_type = std::collections::BTreeMap::<String, (usize, u64, u64)>::new();
    for t in g.tensors() {
        let e = by_type.entry(t.ggml_type.name().to_string()).or_default();
        e.0 += 1;
        e.1 += t.n_elements();
        e.2 += t.size;
    }
    println!("formats:");
    for (ty, (n, el, b)) in &by_type {
        println!(
            "  {ty:6} {n:4} tensors {el:12} weights {b:12} bytes ({:.2} bits/weight)",
            *b as f64 * 8.0 / *el as f64
        );
    }
    let sparse = lottery::models::load::sparse::sparse_names(&g);
    if !sparse.is_empty() {
        println!("sparse weights ({}):", sparse.len());
        let (mut bits, mut weights) = (0.0, 0.0);
        for (i, name) in sparse.iter().enumerate() {
            match lottery::models::load::sparse::read_sparse(&g, name) {
                Ok(Some(t)) => {
                    let n = (t.n * t.k) as f64;
                    bits += t.bits_per_weight() * n;
                    weights += n;
                    if all || i < 24 {
                        println!(
                            "  {:32} [{}, {}] {:12} values {:5} sparsity {:5.1}% {:.3} bits/weight",
                            name,
                            t.k,
                            t.n,
                            t.format.pattern.name(),
                            t.format.values.name(),
                            100.0 * (1.0 - t.density()),
                            t.bits_per_weight()
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => println!("  {name}: unreadable: {e}"),
            }
        }
        if !all && sparse.len() > 24 {
            println!("  ... {} more (--all)", sparse.len() - 24);
        }
        println!(
            "  all sparse weights: {:.3} bits/weight (values, scales and masks)",
            bits / weights.max(1.0)
        );
    }
    println!("tensors:");
    for (i, t) in g.tensors().iter().enumerate() {
        if !all && i >= 24 {
            println!("  ... {} more (--all)", g.tensors().len() - 24);
            break;
        }
        println!(
            "  {:32} {:6} {:?} {} bytes @ {}",
            t.name,
            t.ggml_type.name(),
            t.dims,
            t.size,
            t.offset
        );
    }
    Ok(())
}

/// Perplexity of `text` by llama.cpp's method: (mean NLL, scored tokens,
/// chunks, tokens), each chunk of `chunk` scored from `first` on.
fn score_text(
    model: &Arc<Model>,
    args: &ModelArgs,
    ids: &[u32],
    chunk: usize,
    first: usize,
    progress: bool,
) -> Result<(f64, usize, usize)> {
    let (nll, count, n_chunks, _) = score_text_kl(model, args, ids, chunk, first, progress, None)?;
    Ok((nll, count, n_chunks))
}

/// Log-softmax of one row of logits, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
    let lse = m + row.iter().map(|v| (*v as f64 - m).exp()).sum::<f64>().ln();
    row.iter().map(|v| *v as f64 - lse).collect()
}

/// [`score_text`], and with `baseline` cache types also (mean KL divergence
/// of this run's distributions from the baseline's, share of positions
/// whose top token agrees), over the same scored positions.
#[allow(clippy::type_complexity)]
fn score_text_kl(
    model: &Arc<Model>,
    args: &ModelArgs,
    ids: &[u32],
    chunk: usize,
    first: usize,
    progress: bool,
    baseline: Option<lottery::engine::kv::KvTypes>,
) -> Result<(f64, usize, usize, Option<(f64, f64)>)> {
    let n_chunks = ids.len() / chunk;
    if chunk < 2 || n_chunks == 0 {
        return Err(anyhow!(
            "the text has {} tokens: fewer than one chunk of {chunk}",
            ids.len()
        ));
    }
    let vocab = model.config.vocab;
    let policy = args.kv_policy()?;
    if matches!(policy, lottery::engine::kv::KvPolicy::SnapKv { .. }) {
        return Err(anyhow!(
            "--kv-policy {}: SnapKV compacts the cache once after a prompt, and perplexity \
             scores every position of a chunk in one pass, so it would measure the full cache; \
             use `lottery eval` for its retrieval cost",
            policy.label()
        ));
    }
    let mut s = Session::new(
        model.clone(),
        SessionOptions {
            ctx: chunk as u32,
            kv: args.kv_types()?,
            kv_policy: args.kv_policy()?,
            max_batch: 64,
            logit_rows: 64,
            ..Default::default()
        },
    )?;
    let mut base = match baseline {
        Some(kv) => Some(Session::new(
            model.clone(),
            SessionOptions {
                ctx: chunk as u32,
                kv,
                max_batch: 64,
                logit_rows: 64,
                ..Default::default()
            },
        )?),
        None => None,
    };
    let (mut nll, mut count, mut kl, mut agree) = (0f64, 0usize, 0f64, 0usize);
    for c in 0..n_chunks {
        let part = &ids[c * chunk..(c + 1) * chunk];
        s.rewind(0)?;
        let logits = s.logits(part)?;
        let base_logits = match &mut base {
            Some(b) => {
                b.rewind(0)?;
                Some(b.logits(part)?)
            }
            None => None,
        };
        for j in first..chunk - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let m = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
            let lse = m + row.iter().map(|v| (*v as f64 - m).exp()).sum::<f64>().ln();
            nll += lse - row[part[j + 1] as usize] as f64;
            count += 1;
            if let Some(bl) = &base_logits {
                let brow = &bl[j * vocab..(j + 1) * vocab];
                let (lp, lq) = (log_softmax(brow), log_softmax(row));
                kl += lp
                    .iter()
                    .zip(&lq)
                    .map(|(p, q)| p.exp() * (p - q))
                    .sum::<f64>();
                agree += (lottery::engine::reference::argmax(brow)
                    == lottery::engine::reference::argmax(row)) as usize;
            }
        }
        if progress {
            eprintln!(
                "chunk {}/{}: running perplexity {:.4}",
                c + 1,
                n_chunks,
                (nll / count as f64).exp()
            );
        }
    }
    let kl = base
        .is_some()
        .then(|| (kl / count as f64, agree as f64 / count as f64));
    Ok((nll / count as f64, count, n_chunks, kl))
}

/// Perplexity of a file with chunks of 512 scored on their second halves
/// (what `lottery perplexity` prints by default).
pub(crate) fn perplexity_of(model: &Arc<Model>, args: &ModelArgs, file: &Path) -> Result<f64> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let ids = model.tokenizer.encode(&text)?;
    let (nll, _, _) = score_text(model, args, &ids, 512, 256, false)?;
    Ok(nll.exp())
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let model = a.model.load(a.json)?;
    let ids = model.tokenizer.encode(&text)?;
    let first = if a.all_positions { 0 } else { a.chunk / 2 };
    let t0 = Instant::now();
    let baseline = match &a.kl_vs_kv {
        Some(t) => {
            Some(KvTypes::from(KvDtype::parse(t).ok_or_else(|| {
                anyhow!("--kl-vs-kv: unknown cache type `{t}`")
            })?))
        }
        None => None,
    };
    let (nll, count, n_chunks, kl) =
        score_text_kl(&model, &a.model, &ids, a.chunk, first, !a.json, baseline)
            .with_context(|| a.file.display().to_string())?;
    let ppl = nll.exp();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"tokens": ids.len(), "chunks": n_chunks, "scored": count, "mean_nll": nll, "perplexity": ppl, "seconds": t0.elapsed().as_secs_f64(),
                "kl_vs": a.kl_vs_kv, "mean_kl": kl.map(|k| k.0), "top1_agree": kl.map(|k| k.1)})
        );
    } else {
        println!("perplexity {ppl:.4} over {count} scored tokens ({n_chunks} chunks of {}, {} tokens in the file) in {:.1}s", a.chunk, ids.len(), t0.elapsed().as_secs_f64());
        if let (Some((kl, agree)), Some(t)) = (kl, &a.kl_vs_kv) {
            println!("against a {t} cache: mean KL {kl:.5} nats, top token agrees at {:.2}% of positions", agree * 100.0);
        }
    }
    Ok(())
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    use lottery::models::quantize::{parse_format, quantize_gguf, QuantizeOptions};
    let bad_type = |t: &str| {
        anyhow!("unknown type `{t}`: expected f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl q4_k q5_k q6_k")
    };
    let target = parse_format(&a.ty).ok_or_else(|| bad_type(&a.ty))?;
    let mut overrides = Vec::new();
    for o in &a.overrides {
        let (name, ty) = o
            .split_once('=')
            .ok_or_else(|| anyhow!("--override wants NAME=TYPE, got `{o}`"))?;
        overrides.push((
            name.to_string(),
            parse_format(ty).ok_or_else(|| bad_type(ty))?,
        ));
    }
    let src = GgufFile::open(&a.input)?;
    let t0 = Instant::now();
    let opts = QuantizeOptions { target, overrides };
    let (w, report) = match &a.calibration {
        None => quantize_gguf(&src, &opts)?,
        Some(text) => {
            let gram = a.method != "awq";
            let st = calibrate(&src, &a.input, text, a.calib_tokens, gram, |binding| {
                Ok(Gpu::new(&GpuOptions {
                    storage_binding_limit: binding,
                    ..Default::default()
                })?)
            })?;
            if gram {
                let stats: lottery::models::prune::PruneStats = st.into_iter().collect();
                let bar = indicatif::ProgressBar::new(1);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "gptq [{bar:30}] {pos}/{len} {elapsed}",
                    )
                    .map_err(|e| anyhow!("{e}"))?
                    .progress_chars("=> "),
                );
                let r = lottery::models::quantize::quantize_gguf_gptq(
                    &src,
                    &opts,
                    &stats,
                    a.method == "awq-gptq",
                    &mut |d, t| {
                        bar.set_length(t as u64);
                        bar.set_position(d as u64);
                    },
                )?;
                bar.finish_and_clear();
                r
            } else {
                let stats = st.into_iter().map(|(k, v)| (k, v.mean_sq)).collect();
                let (w, report, alphas) =
                    lottery::models::quantize::quantize_gguf_awq(&src, &opts, &stats)?;
                let mean = |i: usize| {
                    alphas.iter().map(|a| a[i]).sum::<f32>() / alphas.len().max(1) as f32
                };
                println!(
                    "mean alpha per group: qkv {:.2}, o {:.2}, gate/up {:.2}, down {:.2}",
                    mean(0),
                    mean(1),
                    mean(2),
                    mean(3)
                );
                (w, report)
            }
        }
    };
    w.write_file(&a.out)?;
    // Read the result back: a file we cannot read is a failure, not an output.
    let back =
        GgufFile::open(&a.out).with_context(|| format!("reading back {}", a.out.display()))?;
    let mut by = std::collections::BTreeMap::<String, (usize, f64)>::new();
    for r in &report {
        let e = by.entry(format!("{} -> {}", r.from, r.to)).or_default();
        e.0 += 1;
        e.1 = e.1.max(r.rel_rms_error);
    }
    for (k, (n, worst)) in by {
        println!("{k:16} {n:4} tensors, worst relative RMS error {worst:.4}");
    }
    println!(
        "wrote {} ({} tensors, {:.1} MB, was {:.1} MB) in {:.1}s",
        a.out.display(),
        back.tensors().len(),
        back.file_len() as f64 / 1e6,
        src.file_len() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs the first `tokens` tokens of the text file `text` through the model
/// at `model` (on the GPU `open` gives for a binding limit) and returns
/// every projection input's statistics, with Gram matrices when `gram`
/// (GPTQ, SparseGPT): the quantizer's and the pruner's calibration.
pub(crate) fn calibrate(
    src: &GgufFile,
    model: &Path,
    text: &Path,
    tokens: usize,
    gram: bool,
    open: impl FnOnce(Option<u64>) -> Result<Gpu>,
) -> Result<Vec<(String, lottery::models::prune::InputStats)>> {
    let t0 = Instant::now();
    let text =
        std::fs::read_to_string(text).with_context(|| format!("reading {}", text.display()))?;
    // Gram matrices are [k, k] buffers: ask for a larger binding than
    // WebGPU's 128 MiB only when the model needs it.
    let c = lottery::models::arch::llama::LlamaConfig::from_gguf(src)?;
    let k = c.d_model.max(c.ff).max(c.n_head * c.head_dim) as u64;
    let need = gram.then_some(k * k * 4).filter(|n| *n > 128 << 20);
    let gpu = Arc::new(open(need)?);
    let model = Arc::new(Model::load(gpu, model, &mut |_, _| {})?);
    let ids: Vec<u32> = model
        .tokenizer
        .encode(&text)?
        .into_iter()
        .take(tokens)
        .collect();
    if ids.is_empty() {
        return Err(anyhow!("the calibration text has no tokens"));
    }
    let ctx = model.config.ctx_train.clamp(1, 512) as u32;
    let mut s = Session::new(
        model.clone(),
        SessionOptions {
            ctx,
            max_batch: 128,
            ..Default::default()
        },
    )?;
    let st = s.calibrate_inputs(&ids, gram)?;
    println!(
        "calibrated on {} tokens in {:.1}s",
        ids.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(st)
}

fn convert(a: ConvertArgs) -> Result<()> {
    use lottery::models::load::{hf, ChatTemplate, Tokenizer};
    let dtype = lottery::models::quantize::parse_format(&a.dtype)
        .filter(|f| matches!(f.name(), "f32" | "f16" | "bf16"))
        .ok_or_else(|| anyhow!("--dtype must be f32, f16 or bf16"))?;
    let g = GgufFile::open(&a.model)?;
    let tok = Tokenizer::for_model(&g)?;
    let json = tok
        .hf()
        .to_string(false)
        .map_err(|e| anyhow!("serializing the tokenizer: {e}"))?;
    let piece = |id: Option<u32>| id.and_then(|i| tok.token_to_piece(i)).map(String::from);
    let mut cfg = serde_json::json!({
        "bos_token": piece(tok.bos_id()),
        "eos_token": piece(tok.eos_id()),
        "add_bos_token": false,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Ok(t) = ChatTemplate::from_gguf(&g) {
        cfg["chat_template"] = serde_json::Value::String(t.source().to_string());
    }
    hf::write_hf_dir(&g, &a.out, dtype, &json, &cfg)?;
    println!(
        "wrote {} (config.json, model.safetensors in {}, tokenizer.json, tokenizer_config.json)",
        a.out.display(),
        dtype.name()
    );
    Ok(())
}
