//! `lottery embed`, `lottery index` and `lottery search`: sentence embeddings
//! and a local knowledge base on the GPU.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use lottery::models::arch::bert::BertEncoder;
use lottery::models::kb::{collect_files, ChunkOptions, KnowledgeBase, SearchDevice};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Clone)]
pub struct EncoderArgs {
    /// Sentence-transformers directory (default: $LOTTERY_EMBED_MODEL or
    /// models-cache/all-MiniLM-L6-v2, fetched by scripts/fetch-minilm.sh).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Quantize the encoder's matrices at load (e.g. q8_0, f16).
    #[arg(long)]
    pub quantize: Option<String>,
    #[command(flatten)]
    pub gpu: super::GpuArgs,
}

impl EncoderArgs {
    fn load(&self, fallback: Option<&Path>) -> Result<BertEncoder> {
        let dir = match (&self.model, fallback) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) if f.is_dir() => f.to_path_buf(),
            _ => lottery::default_embed_model_path().ok_or_else(|| {
                anyhow!("no encoder given and all-MiniLM-L6-v2 is not downloaded: run `scripts/fetch-minilm.sh`, or pass --model DIR")
            })?,
        };
        let gpu = self.gpu.open(None)?;
        let quantize = match &self.quantize {
            Some(t) => Some(
                lottery::models::quantize::parse_format(t)
                    .ok_or_else(|| anyhow!("--quantize: unknown type `{t}`"))?,
            ),
            None => None,
        };
        BertEncoder::load(Arc::new(gpu), &dir, quantize, &mut |_, _| {})
            .with_context(|| format!("loading {}", dir.display()))
    }
}

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    enc: EncoderArgs,
    /// Text to embed (repeatable).
    #[arg(long, short)]
    text: Vec<String>,
    /// File with one input per non-empty line ("-": standard input).
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// One JSON object per input: {"index", "tokens", "truncated", "embedding"}.
    #[arg(long)]
    json: bool,
}

pub fn embed(a: EmbedArgs) -> Result<()> {
    let mut inputs = a.text.clone();
    if let Some(f) = &a.file {
        let mut s = String::new();
        if f.as_os_str() == "-" {
            std::io::stdin().read_to_string(&mut s)?;
        } else {
            s = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        }
        inputs.extend(s.lines().filter(|l| !l.trim().is_empty()).map(String::from));
    }
    if inputs.is_empty() {
        return Err(anyhow!("nothing to embed: pass --text TEXT or --file FILE"));
    }
    let enc = a.enc.load(None)?;
    let refs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
    let t0 = Instant::now();
    let out = enc.embed(&refs)?;
    let secs = t0.elapsed().as_secs_f64();
    for (i, e) in out.iter().enumerate() {
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "index": i,
                    "tokens": e.tokens,
                    "truncated": e.truncated,
                    "embedding": e.vector,
                })
            );
        } else {
            let v: Vec<String> = e.vector.iter().map(|x| format!("{x:.7}")).collect();
            println!("{}", v.join(" "));
        }
    }
    if !a.json {
        let tokens: usize = out.iter().map(|e| e.tokens).sum();
        eprintln!(
            "{} input(s), {tokens} tokens, dim {} in {:.2} s on {} ({})",
            out.len(),
            enc.dim(),
            secs,
            enc.gpu.adapter.name,
            enc.gpu.adapter.backend
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct IndexArgs {
    #[command(flatten)]
    enc: EncoderArgs,
    /// Knowledge-base directory (created, or added to when it exists).
    #[arg(long)]
    out: PathBuf,
    /// Word pieces per chunk (a new base only; an existing one keeps its own).
    #[arg(long, default_value_t = ChunkOptions::default().max_tokens)]
    chunk_tokens: usize,
    /// Word pieces repeated between consecutive chunks of a paragraph.
    #[arg(long, default_value_t = ChunkOptions::default().overlap_tokens)]
    overlap: usize,
    /// Text files, or directories (walked for .txt, .md, .rst, .text files).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn index(a: IndexArgs) -> Result<()> {
    let files = collect_files(&a.paths)?;
    if files.is_empty() {
        return Err(anyhow!("no text files under the given paths"));
    }
    let enc = a.enc.load(None)?;
    let opts = ChunkOptions {
        max_tokens: a.chunk_tokens,
        overlap_tokens: a.overlap,
    };
    let mut kb = KnowledgeBase::open_or_create(&a.out, &enc, opts)?;
    if kb.chunking() != opts && !kb.is_empty() {
        eprintln!(
            "note: {} keeps its chunking ({} tokens, overlap {})",
            a.out.display(),
            kb.chunking().max_tokens,
            kb.chunking().overlap_tokens
        );
    }
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(1)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "embedding [{bar:30}] {pos}/{len} chunks {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t0 = Instant::now();
    let report = kb.add_files(&enc, &files, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    kb.save()?;
    println!(
        "{}: {} new file(s), {} replaced, {} unchanged; {} chunks embedded in {:.1} s ({:.1} chunks/s on {}); {} chunks in all",
        a.out.display(),
        report.added.len(),
        report.replaced.len(),
        report.unchanged.len(),
        report.chunks,
        secs,
        report.chunks as f64 / secs.max(1e-9),
        enc.gpu.adapter.name,
        kb.len()
    );
    Ok(())
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    enc: EncoderArgs,
    /// Knowledge-base directory (from `lottery index`).
    #[arg(long)]
    kb: PathBuf,
    /// Results to show.
    #[arg(short, default_value_t = 5)]
    k: usize,
    /// Where to score: auto (the GPU for large bases), cpu or gpu.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    device: String,
    /// One JSON object per hit.
    #[arg(long)]
    json: bool,
    /// The query.
    query: String,
}

pub fn search(a: SearchArgs) -> Result<()> {
    let kb = KnowledgeBase::open(&a.kb)?;
    // The encoder that built the base, unless --model says otherwise.
    let recorded = PathBuf::from(&kb.encoder_info().path);
    let enc = a.enc.load(Some(&recorded))?;
    let device = match a.device.as_str() {
        "cpu" => SearchDevice::Cpu,
        "gpu" => SearchDevice::Gpu,
        _ => SearchDevice::Auto,
    };
    let t0 = Instant::now();
    let hits = kb.search(&enc, &a.query, a.k, device)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    for (rank, h) in hits.iter().enumerate() {
        let c = &h.chunk;
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "rank": rank + 1,
                    "score": h.score,
                    "id": c.id,
                    "source": c.source,
                    "line": c.line,
                    "start": c.start,
                    "end": c.end,
                    "text": c.text,
                })
            );
        } else {
            println!("{}. {:.4}  {}:{}", rank + 1, h.score, c.source, c.line);
            for line in c.text.lines() {
                println!("    {line}");
            }
        }
    }
    if !a.json {
        eprintln!(
            "{} of {} chunks in {ms:.1} ms (query embedding included)",
            hits.len(),
            kb.len()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct BenchEmbedArgs {
    #[command(flatten)]
    enc: EncoderArgs,
    /// Sentences to embed (all in one call, batched as indexing does).
    #[arg(long, default_value_t = 256)]
    sentences: usize,
    /// Words per sentence (about 1.2 word pieces each, plus [CLS] and [SEP]).
    #[arg(long, default_value_t = 48)]
    words: usize,
    /// Knowledge-base sizes for the search timing (random unit vectors).
    #[arg(long, value_delimiter = ',', default_value = "1000,20000,200000")]
    kb_sizes: Vec<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Seeded filler text: the same sentences on every run and machine.
fn bench_sentences(n: usize, words: usize) -> Vec<String> {
    const W: [&str; 24] = [
        "river", "engine", "quietly", "seven", "garden", "compute", "yellow", "market", "the",
        "of", "and", "history", "network", "bright", "winter", "language", "model", "stone",
        "measure", "across", "village", "signal", "careful", "window",
    ];
    let mut rng = lottery::engine::reference::Rng::new(42);
    (0..n)
        .map(|_| {
            let mut s: Vec<&str> = (0..words.max(1))
                .map(|_| W[(rng.next_u64() % W.len() as u64) as usize])
                .collect();
            s.push(".");
            s.join(" ")
        })
        .collect()
}

pub fn bench_embed(a: BenchEmbedArgs) -> Result<()> {
    let enc = a.enc.load(None)?;
    let texts = bench_sentences(a.sentences, a.words);
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    // Warm-up: pipelines compile on the first submit.
    enc.embed(&refs[..refs.len().min(4)])?;
    let t0 = Instant::now();
    let out = enc.embed(&refs)?;
    let secs = t0.elapsed().as_secs_f64();
    let tokens: usize = out.iter().map(|e| e.tokens).sum();
    let dim = enc.dim();
    let mut search = Vec::new();
    let mut rng = lottery::engine::reference::Rng::new(7);
    for &n in &a.kb_sizes {
        let mut v = rng.vec(n * dim, 1.0);
        for row in v.chunks_exact_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        let kb = KnowledgeBase::from_vectors(&enc, v)?;
        let q = &out[0].vector;
        let mut row = vec![n as f64];
        for device in [SearchDevice::Cpu, SearchDevice::Gpu] {
            // The first GPU search uploads the vectors; time the second.
            kb.search_vector(&enc.gpu, q, 5, device)?;
            let t = Instant::now();
            kb.search_vector(&enc.gpu, q, 5, device)?;
            row.push(t.elapsed().as_secs_f64() * 1e3);
        }
        search.push(row);
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "adapter": enc.gpu.adapter.name,
                "backend": enc.gpu.adapter.backend,
                "format": enc.format.name(),
                "sentences": out.len(),
                "tokens": tokens,
                "seconds": secs,
                "sentences_per_s": out.len() as f64 / secs,
                "tokens_per_s": tokens as f64 / secs,
                "search_ms": search.iter().map(|r| serde_json::json!({"chunks": r[0], "cpu": r[1], "gpu": r[2]})).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "{} ({}), encoder weights {}: {} sentences, {} tokens ({:.1} per sentence) in {:.2} s: {:.1} sentences/s, {:.0} tokens/s",
            enc.gpu.adapter.name,
            enc.gpu.adapter.backend,
            enc.format.name(),
            out.len(),
            tokens,
            tokens as f64 / out.len().max(1) as f64,
            secs,
            out.len() as f64 / secs,
            tokens as f64 / secs
        );
        for r in &search {
            println!(
                "search top-5 over {:>8} chunks: cpu {:8.2} ms, gpu {:8.2} ms (query embedding excluded)",
                r[0], r[1], r[2]
            );
        }
    }
    Ok(())
}
