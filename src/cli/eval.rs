//! `lottery eval`: capability tasks (../shared/CAPABILITY.md) on one model
//! and cache setting, greedy, scored by each protocol's rule. Every case is
//! appended to DIR/cases.jsonl as it finishes, so an interrupted run resumes
//! where it stopped; every run of a configuration adds a line to
//! DIR/configs.jsonl; DIR/report.md, report.json and chart.svg tabulate every
//! configuration the directory holds (one row each), so runs with other
//! `--kv`, `--kv-policy`, `--quantize` or `--tools` into the same DIR build
//! one table. `--grid FILE` runs every configuration a TOML file lists, the
//! model loaded once per weight file (see [`Grid`]).

use super::ModelArgs;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use lottery::models::eval::{self, Case};
use lottery::models::runtime::{inline_calculator, InlineCall};
use lottery::models::HookAction;
use lottery::GenerateOptions;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const TASKS: [&str; 9] = [
    "passkey",
    "kv_retrieval",
    "arithmetic",
    "var_tracking",
    "copy",
    "kb_qa",
    "kb_multi",
    "word_problems",
    "tool_choice",
];

#[derive(Args, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A TOML file of configurations (`[[config]]` tables with any of model,
    /// quantize, kv, kv_k, kv_v, kv_policy, ctx, tools, solve, tasks,
    /// lengths, cases, seed, perplexity; a `[defaults]` table for all):
    /// each runs in turn into --out, fields it leaves out taken from the
    /// command line. See examples/eval-grid.toml.
    #[arg(long, requires = "out")]
    grid: Option<PathBuf>,
    /// Tasks, comma-separated: passkey, kv_retrieval, arithmetic,
    /// var_tracking, copy, kb_qa (questions on invented facts; with --solve
    /// --tools search, the loop searches a knowledge base of them),
    /// kb_multi (years between two of those facts: two lookups and a
    /// subtraction), word_problems (2 to 4 steps), tool_choice (questions
    /// needing the calculator, the knowledge base or neither; with --solve
    /// the report scores the calls too).
    #[arg(
        long,
        default_value = "passkey,kv_retrieval,arithmetic,var_tracking,copy",
        value_delimiter = ','
    )]
    tasks: Vec<String>,
    /// Buckets to run, by name or first word (passkey 256, 512, 1024, 1800;
    /// kv_retrieval 300, 600, 1200; arithmetic add2, add3, mul2, mul3, or
    /// "mul3 annotated"; var_tracking "2 chains 3 hops"; copy, reverse;
    /// kb_qa "24 passages"; kb_multi "2 passages"; word_problems "2 steps",
    /// "3 steps", "4 steps"; tool_choice calculator, search, none).
    /// Default: all.
    #[arg(long, value_delimiter = ',')]
    lengths: Vec<String>,
    /// Cases per task and bucket (default 20; arithmetic 25, as the
    /// protocol's reference).
    #[arg(long)]
    cases: Option<usize>,
    /// Two cases per bucket (a smoke run for CI).
    #[arg(long)]
    quick: bool,
    /// Seed of the case generators.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run only these trials (0-based) of each bucket: a miss reproduced alone.
    #[arg(long, value_delimiter = ',')]
    trials: Vec<usize>,
    /// Tools: `calculator` answers annotated arithmetic's `<<EXPR=` inline.
    /// With --solve, the tools the loop offers the model: calculator,
    /// memory, prompt_search (over the case's document), search (over the
    /// knowledge base of kb_qa).
    #[arg(long, value_delimiter = ',', value_parser = TOOLS)]
    tools: Vec<String>,
    /// Run every case through the runtime's loop (`lottery solve`) with
    /// --tools, the case's document given apart from its task; the final
    /// answer is scored.
    #[arg(long)]
    solve: bool,
    /// Sentence-transformers directory for search and prompt_search
    /// (default: the fetched all-MiniLM-L6-v2).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// Also measure perplexity on this text (llama.cpp's method, chunks of
    /// 512) for the report's perplexity column.
    #[arg(long)]
    perplexity: Option<PathBuf>,
    /// Directory for cases.jsonl, configs.jsonl, report.md and report.json
    /// (existing results there are kept and resumed).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print this run's summary as JSON.
    #[arg(long)]
    json: bool,
    /// Only rewrite report.md, report.json and chart.svg in --out from the
    /// results already there (no model is loaded, nothing runs).
    #[arg(long, requires = "out")]
    report_only: bool,
    /// Write the selected cases (prompt, answer, token cap, stop, scoring
    /// rule) to this JSONL file and exit, no model loaded: the same case
    /// set for another implementation (scripts/reference-eval.py runs it
    /// through HF transformers).
    #[arg(long, conflicts_with_all = ["grid", "report_only", "out"])]
    export_cases: Option<PathBuf>,
}

fn selected(a: &EvalArgs, bucket: &str) -> bool {
    a.lengths.is_empty()
        || a.lengths
            .iter()
            .any(|l| l == bucket || bucket.split(' ').next() == Some(l.as_str()))
}

fn cases(a: &EvalArgs) -> Result<Vec<Case>> {
    let n = |default: usize| a.cases.unwrap_or(if a.quick { 2 } else { default });
    let s = a.seed;
    let mut all = Vec::new();
    for task in &a.tasks {
        let sets: Vec<Vec<Case>> = match task.as_str() {
            "passkey" => eval::PASSKEY_LENGTHS
                .iter()
                .filter_map(|l| eval::passkey(l.0, n(20), s))
                .collect(),
            "kv_retrieval" => eval::KV_LENGTHS
                .iter()
                .filter_map(|l| eval::kv_retrieval(l.0, n(20), s))
                .collect(),
            "arithmetic" => eval::ARITH_KINDS
                .iter()
                .flat_map(|k| [false, true].map(|ann| eval::arithmetic(k.0, ann, n(25), s)))
                .flatten()
                .collect(),
            "var_tracking" => [1, 2]
                .iter()
                .flat_map(|&ch| eval::VAR_HOPS.map(|h| eval::var_tracking(h, ch, n(20), s)))
                .flatten()
                .collect(),
            "copy" => [false, true]
                .iter()
                .flat_map(|&rev| eval::COPY_LENGTHS.map(|l| eval::copy(rev, l, n(20), s)))
                .flatten()
                .collect(),
            "kb_qa" => vec![eval::kb_qa(n(20), s)],
            "kb_multi" => vec![eval::kb_multi(n(20), s)],
            "word_problems" => eval::WORD_STEPS
                .iter()
                .map(|&st| eval::word_problems(st, n(20), s))
                .collect(),
            "tool_choice" => eval::TOOL_CHOICE_KINDS
                .iter()
                .map(|k| eval::tool_choice(k, n(20), s))
                .collect(),
            t => return Err(anyhow!("unknown task `{t}` ({})", TASKS.join(", "))),
        };
        for set in sets {
            all.extend(set.into_iter().filter(|c| {
                selected(a, &c.length) && (a.trials.is_empty() || a.trials.contains(&c.trial))
            }));
        }
    }
    if all.is_empty() {
        return Err(anyhow!("no cases: check --tasks and --lengths"));
    }
    Ok(all)
}

/// What identifies a configuration (a row of the report).
fn config_label(
    model: &Path,
    quantize: Option<&str>,
    kv: &str,
    policy: &str,
    tools: &[String],
) -> String {
    let file = model
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.display().to_string());
    format!(
        "{file}{}, kv {kv}, {policy}, tools {}",
        quantize.map(|q| format!(" as {q}")).unwrap_or_default(),
        if tools.is_empty() {
            "none".to_string()
        } else {
            tools.join("+")
        }
    )
}

fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // A line cut short by an interrupted run is dropped (its case reruns).
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// A `--grid` file: the report's configurations, one `[[config]]` table
/// each, over the `[defaults]` table and the command line.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Grid {
    #[serde(default)]
    defaults: GridConfig,
    config: Vec<GridConfig>,
}

/// One configuration of a grid; what it leaves out comes from `[defaults]`,
/// then from the command line.
#[derive(serde::Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct GridConfig {
    model: Option<PathBuf>,
    quantize: Option<String>,
    kv: Option<String>,
    kv_k: Option<String>,
    kv_v: Option<String>,
    kv_policy: Option<String>,
    ctx: Option<u32>,
    tools: Option<Vec<String>>,
    solve: Option<bool>,
    tasks: Option<Vec<String>>,
    lengths: Option<Vec<String>>,
    cases: Option<usize>,
    seed: Option<u64>,
    perplexity: Option<PathBuf>,
}

impl GridConfig {
    /// `base` with this configuration's fields set.
    fn apply(&self, base: &EvalArgs) -> EvalArgs {
        let mut a = base.clone();
        let m = &mut a.model;
        if let Some(v) = &self.model {
            m.model = Some(v.clone());
        }
        if let Some(v) = &self.quantize {
            m.quantize = Some(v.clone());
        }
        if let Some(v) = &self.kv {
            m.kv = v.clone();
        }
        if let Some(v) = &self.kv_k {
            m.kv_k = Some(v.clone());
        }
        if let Some(v) = &self.kv_v {
            m.kv_v = Some(v.clone());
        }
        if let Some(v) = &self.kv_policy {
            m.kv_policy = v.clone();
        }
        if let Some(v) = self.ctx {
            m.ctx = v;
        }
        if let Some(v) = &self.tools {
            a.tools = v.clone();
        }
        if let Some(v) = self.solve {
            a.solve = v;
        }
        if let Some(v) = &self.tasks {
            a.tasks = v.clone();
        }
        if let Some(v) = &self.lengths {
            a.lengths = v.clone();
        }
        if let Some(v) = self.cases {
            a.cases = Some(v);
        }
        if let Some(v) = self.seed {
            a.seed = v;
        }
        if let Some(v) = &self.perplexity {
            a.perplexity = Some(v.clone());
        }
        a
    }
}

const TOOLS: [&str; 4] = ["calculator", "memory", "prompt_search", "search"];

/// Every configuration of `path`, checked before anything runs: a typo in
/// the tenth row should not surface after nine rows of work.
fn grid_configs(path: &Path, base: &EvalArgs) -> Result<Vec<EvalArgs>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let grid: Grid = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if grid.config.is_empty() {
        return Err(anyhow!("{}: no [[config]] tables", path.display()));
    }
    let base = grid.defaults.apply(base);
    let mut out = Vec::new();
    for (i, c) in grid.config.iter().enumerate() {
        let a = c.apply(&base);
        let at = || {
            format!(
                "{}: [[config]] {} of {}",
                path.display(),
                i + 1,
                grid.config.len()
            )
        };
        if let Some(m) = &a.model.model {
            if !m.exists() {
                return Err(anyhow!("{}: model {} does not exist", at(), m.display()));
            }
        }
        a.model.kv_types().with_context(at)?;
        a.model.kv_policy().with_context(at)?;
        if let Some(t) = a.tools.iter().find(|t| !TOOLS.contains(&t.as_str())) {
            return Err(anyhow!(
                "{}: unknown tool `{t}` ({})",
                at(),
                TOOLS.join(", ")
            ));
        }
        if let Some(q) = &a.model.quantize {
            if lottery::models::quantize::parse_format(q).is_none() {
                return Err(anyhow!("{}: unknown quantize format `{q}`", at()));
            }
        }
        cases(&a).with_context(at)?;
        out.push(a);
    }
    Ok(out)
}

pub fn run(a: EvalArgs) -> Result<()> {
    if let Some(path) = &a.export_cases {
        let set = cases(&a)?;
        export_cases(&set, a.seed, path)?;
        println!("wrote {} cases to {}", set.len(), path.display());
        return Ok(());
    }
    if a.report_only {
        let dir = a.out.as_deref().expect("clap requires --out");
        write_reports(dir)?;
        println!("wrote {}", dir.join("report.md").display());
        return Ok(());
    }
    let Some(grid) = &a.grid else {
        let model = a.model.load(a.json)?;
        return run_config(&a, model);
    };
    let configs = grid_configs(grid, &a)?;
    // Configurations grouped by weight file (and load-time quantization),
    // in the order the file first names each: one load per group, dropped
    // before the next one loads.
    let key = |c: &EvalArgs| (c.model.model.clone(), c.model.quantize.clone());
    let mut groups: Vec<(_, Vec<(usize, &EvalArgs)>)> = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        match groups.iter_mut().find(|(k, _)| *k == key(c)) {
            Some((_, v)) => v.push((i, c)),
            None => groups.push((key(c), vec![(i, c)])),
        }
    }
    for (_, members) in groups {
        let model = members[0].1.model.load(a.json)?;
        for (i, c) in members {
            if !c.json {
                println!("== config {} of {}", i + 1, configs.len());
            }
            run_config(c, model.clone())?;
        }
    }
    Ok(())
}

/// One JSON line per case, with what another implementation needs to run
/// and score it exactly as `run_config` does (without tools).
fn export_cases(set: &[Case], seed: u64, path: &Path) -> Result<()> {
    let mut text = String::new();
    for c in set {
        let line = serde_json::json!({
            "task": c.task,
            "length": c.length,
            "trial": c.trial,
            "seed": seed,
            "prompt": c.prompt,
            "answer": c.answer,
            "max_tokens": c.max_tokens,
            "stop": c.stop,
            "scoring": format!("{:?}", c.scoring),
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// One configuration on its loaded model.
fn run_config(a: &EvalArgs, model: Arc<lottery::models::Model>) -> Result<()> {
    let all = cases(a)?;
    let mut session = a.model.session(&model)?;
    let kv = a.model.kv_types()?;
    let policy = a.model.kv_policy()?;
    let c = &model.config;
    let kv_bytes = kv.bytes_per_token(c.n_layer as u32, c.n_kv_head as u32, c.head_dim as u32);
    let mut tool_label = a.tools.clone();
    if a.solve {
        tool_label.insert(0, "loop".into());
    }
    let label = config_label(
        &model.path,
        a.model.quantize.as_deref(),
        &kv.label(),
        &policy.label(),
        &tool_label,
    );
    let calculator = a.tools.iter().any(|t| t == "calculator");
    if !a.solve {
        if let Some(t) = a.tools.iter().find(|t| *t != "calculator") {
            return Err(anyhow!(
                "--tools {t} is a tool of the runtime's loop: add --solve"
            ));
        }
    }
    let encoder = if a.solve
        && a.tools
            .iter()
            .any(|t| t == "prompt_search" || t == "search")
    {
        Some(super::solve::encoder(a.embed_model.clone())?)
    } else {
        None
    };
    // kb_qa's knowledge base: the seed's passages as files, indexed as
    // `lottery index` would.
    let kb_search = match (&encoder, a.tools.iter().any(|t| t == "search")) {
        (Some(e), true) if all.iter().any(|c| needs_kb(c.task)) => {
            Some(kb_qa_base(e, a.out.as_deref(), a.seed)?)
        }
        _ => None,
    };
    // Resume: the cases this configuration and seed already have.
    let mut done: BTreeMap<(String, String, usize), bool> = BTreeMap::new();
    let mut jsonl = match &a.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            for v in read_jsonl(&d.join("cases.jsonl"))? {
                if v["config"] == label.as_str() && v["seed"] == a.seed {
                    let key = (
                        v["task"].as_str().unwrap_or("").to_string(),
                        v["length"].as_str().unwrap_or("").to_string(),
                        v["trial"].as_u64().unwrap_or(0) as usize,
                    );
                    done.insert(key, v["correct"].as_bool().unwrap_or(false));
                }
            }
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(d.join("cases.jsonl"))?,
            )
        }
        None => None,
    };
    let todo: Vec<&Case> = all
        .iter()
        .filter(|c| !done.contains_key(&(c.task.to_string(), c.length.clone(), c.trial)))
        .collect();
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(todo.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cases, eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t0 = Instant::now();
    for c in todo {
        if a.solve {
            let (ok, record) = solve_case(
                &mut session,
                c,
                &a.tools,
                encoder.as_ref(),
                kb_search.as_ref().filter(|_| needs_kb(c.task)),
            )?;
            done.insert((c.task.to_string(), c.length.clone(), c.trial), ok);
            if let Some(f) = jsonl.as_mut() {
                let mut r = serde_json::json!({
                    "config": label, "task": c.task, "length": c.length, "trial": c.trial,
                    "seed": a.seed, "answer": c.answer, "correct": ok,
                });
                if let (Some(m), serde_json::Value::Object(x)) = (r.as_object_mut(), record) {
                    m.extend(x);
                }
                writeln!(f, "{r}")?;
            }
            bar.set_message(format!("{} {}", c.task, c.length));
            bar.inc(1);
            continue;
        }
        let ids = model.tokenizer.encode(&c.prompt)?;
        // Cases of a bucket share their instructions, few-shot examples and
        // (passkey) the filler before the key: keep the cached prefix the
        // last case left. Only with every position kept: a ring may have
        // evicted the prefix, and Quest's page bounds would still hold the
        // keys past the rewind point.
        let reused = if policy == lottery::KvPolicy::Full {
            session.rewind_to_prefix(&ids)?
        } else {
            session.rewind(0)?;
            0
        };
        let opts = GenerateOptions {
            max_tokens: c.max_tokens,
            stop_at_eos: false,
            stop: c.stop.iter().cloned().collect(),
            ..Default::default()
        };
        let mut calls: Vec<InlineCall> = Vec::new();
        let g = if c.calculator && calculator {
            session.generate_with_hook(
                &ids[reused..],
                &opts,
                inline_calculator(&mut calls, |_| true),
            )?
        } else {
            session.generate_with_hook(&ids[reused..], &opts, |_| HookAction::Continue)?
        };
        let ok = eval::correct(c, &g.text);
        done.insert((c.task.to_string(), c.length.clone(), c.trial), ok);
        if let Some(f) = jsonl.as_mut() {
            writeln!(
                f,
                "{}",
                serde_json::json!({
                    "config": label, "task": c.task, "length": c.length, "trial": c.trial,
                    "seed": a.seed, "prompt_tokens": ids.len(), "reused_tokens": reused,
                    "answer": c.answer,
                    "output": g.text, "correct": ok,
                    "tool_calls": calls.iter().map(|k| &k.expression).collect::<Vec<_>>(),
                })
            )?;
        }
        bar.set_message(format!("{} {}", c.task, c.length));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let perplexity = match &a.perplexity {
        // SnapKV compacts after a prompt, and perplexity scores every
        // position of a chunk in one pass: it would measure the full cache.
        Some(_) if matches!(policy, lottery::engine::kv::KvPolicy::SnapKv { .. }) => {
            eprintln!(
                "perplexity: not measured under {} (it compacts only after a prompt)",
                policy.label()
            );
            None
        }
        Some(f) => Some(super::perplexity_of(&model, &a.model, f)?),
        None => None,
    };
    // This run's cells, in generation order.
    let mut cells: Vec<((String, String), (usize, usize))> = Vec::new();
    for c in &all {
        let ok = done[&(c.task.to_string(), c.length.clone(), c.trial)];
        let key = (c.task.to_string(), c.length.clone());
        match cells.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.0 += ok as usize;
                v.1 += 1;
            }
            None => cells.push((key, (ok as usize, 1))),
        }
    }
    let config = serde_json::json!({
        "config": label,
        "model": model.path.display().to_string(),
        "quantize": a.model.quantize,
        "bits_per_weight": bits_per_weight(&model),
        "kv": kv.label(),
        "kv_policy": policy.label(),
        "kv_bytes_per_token": kv_bytes,
        "tools": a.tools,
        "solve": a.solve,
        "seed": a.seed,
        "perplexity": perplexity,
        "seconds": seconds,
        "adapter": model.gpu.adapter.name,
        "cells": cells.iter().map(|((t, l), (ok, n))| serde_json::json!({
            "task": t, "length": l, "correct": ok, "cases": n,
        })).collect::<Vec<_>>(),
    });
    if let Some(d) = &a.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("configs.jsonl"))?;
        writeln!(f, "{config}")?;
        write_reports(d)?;
    }
    if a.json {
        println!("{config}");
    } else {
        println!(
            "{label} seed {} on {} ({seconds:.0} s)",
            a.seed, model.gpu.adapter.name
        );
        if let Some(p) = perplexity {
            println!("perplexity {p:.4}");
        }
        println!("{:<14} {:<20} {:>8}", "task", "bucket", "correct");
        for ((t, l), (ok, n)) in &cells {
            println!("{t:<14} {l:<20} {:>8}", format!("{ok}/{n}"));
        }
    }
    Ok(())
}

/// Tasks whose questions are about kb_qa's knowledge base.
fn needs_kb(task: &str) -> bool {
    task.starts_with("kb_") || task == "tool_choice"
}

/// One case through the runtime's loop: the tools named, `prompt_search`
/// over the case's document. Returns whether the answer is right and what
/// the case file records (output, calls, the trace).
fn solve_case(
    session: &mut lottery::Session,
    c: &Case,
    tool_names: &[String],
    encoder: Option<&std::sync::Arc<lottery::models::arch::bert::BertEncoder>>,
    kb: Option<&lottery::models::runtime::retrieval::KbSearch>,
) -> Result<(bool, serde_json::Value)> {
    use lottery::models::runtime::retrieval::PromptSearch;
    use lottery::models::runtime::solve::{solve, SolveOptions};
    use lottery::models::runtime::{Calculator, Memory, Tool};
    let mut tools: Vec<Box<dyn Tool>> = Vec::new();
    for t in tool_names {
        match t.as_str() {
            "calculator" => tools.push(Box::new(Calculator)),
            "memory" => tools.push(Box::new(Memory::default())),
            "prompt_search" => {
                if let (Some(doc), Some(e)) = (&c.document, encoder) {
                    tools.push(Box::new(PromptSearch::new(e.clone(), doc)?));
                }
            }
            _ => {}
        }
    }
    let mut refs: Vec<&dyn Tool> = tools.iter().map(|t| t.as_ref()).collect();
    if let Some(k) = kb {
        if tool_names.iter().any(|t| t == "search") {
            refs.push(k);
        }
    }
    // No rewind: the loop keeps the cached prefix it shares with the last
    // case (the system turn and the demonstrations).
    let sol = solve(
        session,
        &refs,
        &c.task_without_document(),
        c.document.as_deref(),
        &SolveOptions::default(),
    )?;
    let answer = sol.answer.clone().unwrap_or_default();
    let ok = eval::correct_answer(c, &answer);
    let calls: Vec<serde_json::Value> = sol
        .trace
        .iter()
        .filter(|s| s.kind == "call")
        .map(|s| serde_json::json!({"tool": s.tool, "arguments": s.arguments}))
        .collect();
    Ok((
        ok,
        serde_json::json!({
            "output": answer,
            "tool_calls": calls,
            "generated_tokens": sol.tokens,
            "seconds": sol.seconds,
            "trace": sol.trace,
        }),
    ))
}

/// The knowledge base of kb_qa for `seed`: its passages written to
/// DIR/kb_qa-seed-S/docs (a temporary directory without --out) and indexed.
fn kb_qa_base(
    encoder: &std::sync::Arc<lottery::models::arch::bert::BertEncoder>,
    out: Option<&Path>,
    seed: u64,
) -> Result<lottery::models::runtime::retrieval::KbSearch> {
    use lottery::models::kb::{ChunkOptions, KnowledgeBase};
    let root = match out {
        Some(d) => d.join(format!("kb_qa-seed-{seed}")),
        None => std::env::temp_dir().join(format!("lottery-kb_qa-{}-{seed}", std::process::id())),
    };
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).with_context(|| format!("creating {}", docs.display()))?;
    let mut files = Vec::new();
    for e in eval::kb_documents(seed) {
        let f = docs.join(&e.file);
        std::fs::write(&f, format!("{}\n", e.text))
            .with_context(|| format!("writing {}", f.display()))?;
        files.push(f);
    }
    let kb_dir = root.join("kb");
    if kb_dir.exists() {
        std::fs::remove_dir_all(&kb_dir)
            .with_context(|| format!("removing {}", kb_dir.display()))?;
    }
    let mut kb = KnowledgeBase::create(&kb_dir, encoder, ChunkOptions::default())?;
    kb.add_files(encoder, &files, &mut |_, _| {})?;
    // Saved, so `lottery search --kb DIR/kb_qa-seed-S/kb` reproduces a call.
    kb.save()?;
    Ok(lottery::models::runtime::retrieval::KbSearch::new(
        std::sync::Arc::new(kb),
        encoder.clone(),
    )?)
}

/// Bits per weight of what a decode step reads (matrices, norms, LM head).
fn bits_per_weight(model: &lottery::models::Model) -> f64 {
    let w = &model.weights;
    let c = &model.config;
    let mut params = (c.vocab * c.d_model + c.d_model) as f64;
    for l in &w.layers {
        params += [&l.wqkv, &l.wo, &l.w_gate_up, &l.w_down]
            .iter()
            .map(|m| (m.n * m.k) as f64)
            .sum::<f64>()
            + 2.0 * c.d_model as f64;
    }
    8.0 * w.decode_bytes() as f64 / params
}

/// report.md and report.json from everything in `dir`: one row per
/// configuration (its latest run), one column per task bucket, each cell
/// correct/cases over every case of that configuration and seed 0.. kept.
fn write_reports(dir: &Path) -> Result<()> {
    let configs = read_jsonl(&dir.join("configs.jsonl"))?;
    let cases = read_jsonl(&dir.join("cases.jsonl"))?;
    let mut rows: Vec<String> = Vec::new();
    let mut meta: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for c in &configs {
        let l = c["config"].as_str().unwrap_or("").to_string();
        if !rows.contains(&l) {
            rows.push(l.clone());
        }
        meta.insert(l, c.clone());
    }
    // Columns in first-seen order; cells count each (seed, trial) once.
    let mut cols: Vec<(String, String)> = Vec::new();
    let mut seen: BTreeSet<(String, String, String, u64, u64)> = BTreeSet::new();
    let mut cell: BTreeMap<(String, (String, String)), (usize, usize)> = BTreeMap::new();
    // Tool choice under the loop: (bucket, tools called) per case.
    let mut choice: BTreeMap<String, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for v in cases.iter().rev() {
        let (cfg, t, l) = (
            v["config"].as_str().unwrap_or("").to_string(),
            v["task"].as_str().unwrap_or("").to_string(),
            v["length"].as_str().unwrap_or("").to_string(),
        );
        let id = (
            cfg.clone(),
            t.clone(),
            l.clone(),
            v["seed"].as_u64().unwrap_or(0),
            v["trial"].as_u64().unwrap_or(0),
        );
        if !seen.insert(id) {
            continue; // a rerun of the same case: the latest counts
        }
        if t == "tool_choice" {
            let called: Vec<String> = v["tool_calls"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c["tool"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            choice
                .entry(cfg.clone())
                .or_default()
                .push((l.clone(), called));
        }
        let e = cell.entry((cfg, (t, l))).or_default();
        e.0 += v["correct"].as_bool().unwrap_or(false) as usize;
        e.1 += 1;
    }
    for v in &cases {
        let k = (
            v["task"].as_str().unwrap_or("").to_string(),
            v["length"].as_str().unwrap_or("").to_string(),
        );
        if !cols.contains(&k) {
            cols.push(k);
        }
    }
    let mut md = String::from("# lottery eval\n\n");
    md.push_str(
        "Greedy decoding, the protocols of ../shared/CAPABILITY.md; a cell is correct/cases.\n\n",
    );
    md.push_str("| configuration | bits/weight | KV bytes/token | perplexity |");
    for (t, l) in &cols {
        md.push_str(&format!(" {t} {l} |"));
    }
    md.push_str("\n|---|---|---|---|");
    md.push_str(&"---|".repeat(cols.len()));
    md.push('\n');
    let mut json_rows = Vec::new();
    let mut choice_md = String::new();
    for r in &rows {
        let m = &meta[r];
        md.push_str(&format!(
            "| {} | {:.2} | {} | {} |",
            r.replace('|', "\\|"),
            m["bits_per_weight"].as_f64().unwrap_or(0.0),
            m["kv_bytes_per_token"],
            m["perplexity"]
                .as_f64()
                .map(|p| format!("{p:.3}"))
                .unwrap_or_else(|| "".into())
        ));
        let mut jc = Vec::new();
        for col in &cols {
            match cell.get(&(r.clone(), col.clone())) {
                Some((ok, n)) => {
                    md.push_str(&format!(" {ok}/{n} |"));
                    jc.push(serde_json::json!({"task": col.0, "length": col.1, "correct": ok, "cases": n}));
                }
                None => md.push_str(" |"),
            }
        }
        md.push('\n');
        let calls = choice
            .get(r)
            .filter(|_| m["solve"].as_bool() == Some(true))
            .map(|cs| {
                eval::call_scores(
                    cs.iter()
                        .map(|(b, c)| (b.as_str(), c.iter().map(String::as_str).collect())),
                )
            });
        if let Some((p, rc)) = calls {
            let f = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
            choice_md.push_str(&format!("- {}: precision {}, recall {}\n", r, f(p), f(rc)));
        }
        json_rows.push(serde_json::json!({
            "tool_choice_calls": calls.map(|(p, rc)| serde_json::json!({"precision": p, "recall": rc})),
            "config": r,
            "bits_per_weight": m["bits_per_weight"],
            "kv_bytes_per_token": m["kv_bytes_per_token"],
            "perplexity": m["perplexity"],
            "adapter": m["adapter"],
            "cells": jc,
        }));
    }
    let points: Vec<ChartRow> = rows
        .iter()
        .map(|r| ChartRow {
            bits: meta[r]["bits_per_weight"].as_f64().unwrap_or(0.0),
            acc: cols
                .iter()
                .map(|col| {
                    cell.get(&(r.clone(), col.clone()))
                        .filter(|(_, n)| *n > 0)
                        .map(|(ok, n)| *ok as f64 / *n as f64)
                })
                .collect(),
        })
        .collect();
    let names: Vec<String> = cols.iter().map(|(t, l)| format!("{t} {l}")).collect();
    write_chart(&dir.join("chart.svg"), &names, &points)?;
    if !choice_md.is_empty() {
        md.push_str(
            "\nTool choice, the calls made under the loop (each case expects its bucket's tool, none for \"none\"):\n\n",
        );
        md.push_str(&choice_md);
    }
    md.push_str("\n![accuracy against bits per weight](chart.svg)\n");
    std::fs::write(dir.join("report.md"), md)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "rows": json_rows }))?,
    )?;
    Ok(())
}

/// One configuration's point per task column (None: not run).
struct ChartRow {
    bits: f64,
    acc: Vec<Option<f64>>,
}

/// chart.svg: accuracy against bits per weight, one line per task (its
/// columns' lengths and variants averaged): a dot for every configuration,
/// the line through the best one at each size (configurations of one
/// weight file differ by KV cache or tools and share the x position).
fn write_chart(path: &Path, names: &[String], rows: &[ChartRow]) -> Result<()> {
    use plotters::prelude::*;
    // Task of a column: the first word of its name.
    let mut tasks: Vec<String> = Vec::new();
    for n in names {
        let t = n.split(' ').next().unwrap_or("").to_string();
        if !tasks.contains(&t) {
            tasks.push(t);
        }
    }
    let task_acc = |r: &ChartRow, task: &str| -> Option<f64> {
        let v: Vec<f64> = names
            .iter()
            .zip(&r.acc)
            .filter(|(n, _)| n.split(' ').next() == Some(task))
            .filter_map(|(_, a)| *a)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let (lo, hi) = rows.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| {
        (lo.min(r.bits), hi.max(r.bits))
    });
    let (lo, hi) = if rows.is_empty() {
        (0.0, 16.0)
    } else {
        ((lo - 0.5).max(0.0), hi + 0.5)
    };
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "accuracy against bits per weight (line: best configuration at each size)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d(lo..hi, 0.0..1.0)
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("bits per weight")
        .y_desc("correct / cases")
        .draw()
        .map_err(|e| draw(&e))?;
    for (i, task) in tasks.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let dots: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| task_acc(r, task).map(|a| (r.bits, a)))
            .collect();
        let mut best: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for &(x, y) in &dots {
            let e = best.entry(x.to_bits()).or_insert((x, y));
            e.1 = e.1.max(y);
        }
        let mut line: Vec<(f64, f64)> = best.into_values().collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label(task.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(dots.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| draw(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}
