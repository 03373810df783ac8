//! `lottery solve`: the runtime's loop on one task, with the tools named.

use super::ModelArgs;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use lottery::models::arch::bert::BertEncoder;
use lottery::models::kb::KnowledgeBase;
use lottery::models::runtime::retrieval::{KbSearch, PromptSearch};
use lottery::models::runtime::solve::{solve as run_loop, SolveOptions};
use lottery::models::runtime::{Calculator, Memory, Tool};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct SolveArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tools the model may call (comma-separated): calculator, memory,
    /// prompt_search (over --file), search (over --kb).
    #[arg(long, value_delimiter = ',', value_parser = ["calculator", "memory", "prompt_search", "search"])]
    tools: Vec<String>,
    /// The task (the question).
    #[arg(long, short)]
    prompt: String,
    /// A document given with the task: shown whole when short, else read
    /// through prompt_search.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Knowledge base for `search` (`lottery index`).
    #[arg(long)]
    kb: Option<PathBuf>,
    /// Sentence-transformers directory for search and prompt_search
    /// (default: the model that built the KB, else the fetched all-MiniLM-L6-v2).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// Tool calls before only an answer is allowed.
    #[arg(long, default_value_t = 6)]
    max_calls: usize,
    /// Ask the model to check its answer, retrying once from before it on a "no".
    #[arg(long)]
    verify: bool,
    /// Leave out the worked examples shown before the task.
    #[arg(long)]
    no_examples: bool,
    /// Write the trace (every action, call, result and check) as JSON here.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print one JSON object: answer, trace, timings.
    #[arg(long)]
    json: bool,
}

pub(super) fn encoder(dir: Option<PathBuf>) -> Result<Arc<BertEncoder>> {
    let dir = match dir {
        Some(d) => d,
        None => lottery::default_embed_model_path().ok_or_else(|| {
            anyhow!("search and prompt_search need an embedding model: run scripts/fetch-minilm.sh or pass --embed-model DIR")
        })?,
    };
    let gpu = lottery::Gpu::new(&lottery::GpuOptions::default())?;
    Ok(Arc::new(
        BertEncoder::load(Arc::new(gpu), &dir, None, &mut |_, _| {})
            .with_context(|| format!("loading {}", dir.display()))?,
    ))
}

/// The tools named, built: `prompt_search` over `context`, `search` over
/// the knowledge base in `kb` (with the embedding model that built it,
/// unless `embed_model` says otherwise, loaded for it).
pub(super) fn build_tools(
    names: &[String],
    context: Option<&str>,
    kb: Option<&std::path::Path>,
    embed_model: Option<&std::path::Path>,
) -> Result<Vec<Box<dyn Tool>>> {
    let mut tools: Vec<Box<dyn Tool>> = Vec::new();
    let mut enc: Option<Arc<BertEncoder>> = None;
    for t in names {
        match t.as_str() {
            "calculator" => tools.push(Box::new(Calculator)),
            "memory" => tools.push(Box::new(Memory::default())),
            "prompt_search" => {
                let text = context
                    .ok_or_else(|| anyhow!("prompt_search reads the document given with --file"))?;
                let e = match &enc {
                    Some(e) => e.clone(),
                    None => encoder(embed_model.map(PathBuf::from))?,
                };
                enc = Some(e.clone());
                tools.push(Box::new(PromptSearch::new(e, text)?));
            }
            "search" => {
                let dir = kb.ok_or_else(|| anyhow!("search needs --kb DIR"))?;
                let kb = Arc::new(KnowledgeBase::open(dir)?);
                let recorded = PathBuf::from(&kb.encoder_info().path);
                let e = encoder(
                    embed_model
                        .map(PathBuf::from)
                        .or(Some(recorded).filter(|p| p.is_dir())),
                )?;
                tools.push(Box::new(KbSearch::new(kb, e)?));
            }
            other => return Err(anyhow!("unknown tool {other:?}")),
        }
    }
    Ok(tools)
}

pub fn solve(a: SolveArgs) -> Result<()> {
    let context = match &a.file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        None => None,
    };
    let model = a.model.load(a.json)?;
    let mut session = a.model.session(&model)?;
    let tools = build_tools(
        &a.tools,
        context.as_deref(),
        a.kb.as_deref(),
        a.embed_model.as_deref(),
    )?;
    let refs: Vec<&dyn Tool> = tools.iter().map(|t| t.as_ref()).collect();
    let opts = SolveOptions {
        max_calls: a.max_calls,
        verify: a.verify,
        demonstrations: !a.no_examples,
        ..Default::default()
    };
    let sol = run_loop(&mut session, &refs, &a.prompt, context.as_deref(), &opts)?;
    let v = serde_json::to_value(&sol)?;
    if let Some(p) = &a.trace {
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if a.json {
        println!("{v}");
    } else {
        for s in &sol.trace {
            match s.kind.as_str() {
                "call" => eprintln!(
                    "[{} {}] -> {}",
                    s.tool.as_deref().unwrap_or("?"),
                    s.arguments,
                    s.result.as_deref().or(s.error.as_deref()).unwrap_or("")
                ),
                "answer" => {}
                k => eprintln!("[{k}] {}", s.text),
            }
        }
        match &sol.answer {
            Some(ans) => println!("{ans}"),
            None => println!("(no answer within {} calls)", a.max_calls),
        }
        eprintln!(
            "[{} steps, {} tokens, {:.1} s]",
            sol.trace.len(),
            sol.tokens,
            sol.seconds
        );
    }
    Ok(())
}
