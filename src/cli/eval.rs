//! `lottery eval`: capability tasks (../shared/CAPABILITY.md) on one model and
//! cache setting: passkey and KV retrieval at their lengths, greedy, scored
//! by the protocol's rule. Writes per-case JSONL and a summary.

use super::ModelArgs;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use lottery::models::eval::{self, Case};
use lottery::GenerateOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tasks, comma-separated: passkey, kv_retrieval.
    #[arg(long, default_value = "passkey,kv_retrieval", value_delimiter = ',')]
    tasks: Vec<String>,
    /// Length buckets to run (default: all of each task's: passkey 256, 512,
    /// 1024, 1800; kv_retrieval 300, 600, 1200).
    #[arg(long, value_delimiter = ',')]
    lengths: Vec<usize>,
    /// Cases per task and length.
    #[arg(long, default_value_t = 20)]
    cases: usize,
    /// Seed of the case generators.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run only these trials (0-based) of each task and length: a miss
    /// reproduced alone.
    #[arg(long, value_delimiter = ',')]
    trials: Vec<usize>,
    /// Directory for cases.jsonl and report.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn cases(a: &EvalArgs) -> Result<Vec<Case>> {
    let mut all = Vec::new();
    for task in &a.tasks {
        let lengths: Vec<usize> = match task.as_str() {
            "passkey" => eval::PASSKEY_LENGTHS.iter().map(|l| l.0).collect(),
            "kv_retrieval" => eval::KV_LENGTHS.iter().map(|l| l.0).collect(),
            t => return Err(anyhow!("unknown task `{t}` (passkey, kv_retrieval)")),
        };
        for &l in &lengths {
            if !a.lengths.is_empty() && !a.lengths.contains(&l) {
                continue;
            }
            let c = if task == "passkey" {
                eval::passkey(l, a.cases, a.seed)
            } else {
                eval::kv_retrieval(l, a.cases, a.seed)
            };
            all.extend(
                c.unwrap_or_default()
                    .into_iter()
                    .filter(|c| a.trials.is_empty() || a.trials.contains(&c.trial)),
            );
        }
    }
    if all.is_empty() {
        return Err(anyhow!("no cases: check --tasks and --lengths"));
    }
    Ok(all)
}

/// (task, length) and its (correct, cases, prompt tokens).
type Cell = ((String, String), (usize, usize, usize));

pub fn run(a: EvalArgs) -> Result<()> {
    let all = cases(&a)?;
    let model = a.model.load(a.json)?;
    let mut session = a.model.session(&model)?;
    let kv = a.model.kv_types()?;
    let policy = a.model.kv_policy()?;
    let mut jsonl = match &a.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            Some(std::fs::File::create(d.join("cases.jsonl"))?)
        }
        None => None,
    };
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(all.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cases, eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut cells: Vec<Cell> = Vec::new();
    let t0 = Instant::now();
    for c in &all {
        let ids = model.tokenizer.encode(&c.prompt)?;
        session.rewind(0)?;
        let g = session.generate(
            &ids,
            &GenerateOptions {
                max_tokens: c.max_tokens,
                stop_at_eos: true,
                ..Default::default()
            },
            |_, _| true,
        )?;
        let ok = eval::correct(c, &g.text);
        if let Some(f) = jsonl.as_mut() {
            writeln!(
                f,
                "{}",
                serde_json::json!({
                    "task": c.task, "length": c.length, "trial": c.trial, "seed": a.seed,
                    "prompt_tokens": ids.len(), "answer": c.answer, "output": g.text, "correct": ok,
                })
            )?;
        }
        let key = (c.task.to_string(), c.length.clone());
        match cells.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.0 += ok as usize;
                v.1 += 1;
                v.2 += ids.len();
            }
            None => cells.push((key, (ok as usize, 1, ids.len()))),
        }
        bar.set_message(format!("{} {}", c.task, c.length));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let c = &model.config;
    let report = serde_json::json!({
        "model": model.path.display().to_string(),
        "kv": kv.label(),
        "kv_policy": policy.label(),
        "kv_bytes_per_token": kv.bytes_per_token(c.n_layer as u32, c.n_kv_head as u32, c.head_dim as u32),
        "seed": a.seed,
        "seconds": seconds,
        "adapter": model.gpu.adapter.name,
        "cells": cells.iter().map(|((t, l), (ok, n, toks))| serde_json::json!({
            "task": t, "length": l, "correct": ok, "cases": n, "mean_prompt_tokens": toks / n,
        })).collect::<Vec<_>>(),
    });
    if let Some(d) = &a.out {
        std::fs::write(
            d.join("report.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
    }
    if a.json {
        println!("{report}");
    } else {
        println!(
            "kv {} policy {} seed {} on {} ({:.0} s)",
            kv.label(),
            policy.label(),
            a.seed,
            model.gpu.adapter.name,
            seconds
        );
        println!(
            "{:<14} {:>7} {:>8} {:>14}",
            "task", "length", "correct", "prompt tokens"
        );
        for ((t, l), (ok, n, toks)) in &cells {
            println!("{t:<14} {l:>7} {:>8} {:>14}", format!("{ok}/{n}"), toks / n);
        }
    }
    Ok(())
}
