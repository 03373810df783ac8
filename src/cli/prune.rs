//! `lottery prune`: sparse weights from a dense model.

use super::GpuArgs;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use lottery::engine::formats::Pattern;
use lottery::models::load::GgufFile;
use lottery::models::prune::{
    check_joint, prune_gguf, LayerSparsity, PruneMethod, PruneOptions, PruneStats,
};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct PruneArgs {
    /// Source GGUF model.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output GGUF.
    #[arg(long)]
    out: PathBuf,
    /// magnitude, wanda (needs --calibration) or sparsegpt (needs --calibration).
    #[arg(long, default_value = "magnitude")]
    method: String,
    /// Fraction of the weights to remove (unstructured): per row for
    /// magnitude and Wanda, per block of 128 columns over all rows for
    /// SparseGPT.
    #[arg(long, conflicts_with = "pattern", required_unless_present = "pattern")]
    sparsity: Option<f64>,
    /// N:M pattern instead: N of every M consecutive weights kept (M 4 or 8).
    #[arg(long)]
    pattern: Option<String>,
    /// Format of the kept values: f16, q8_0, q4_0, q4_1.
    #[arg(long, default_value = "q4_0")]
    values: String,
    /// Calibration text run through the model on the GPU (Wanda's input
    /// norms, SparseGPT's Hessians).
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Tokens of calibration text to use.
    #[arg(long, default_value_t = 512)]
    calib_tokens: usize,
    /// uniform, or owl: per-layer sparsity from each layer's outlier ratio
    /// (unstructured only).
    #[arg(long, default_value = "uniform")]
    layer_sparsity: String,
    /// Leave weights whose name contains this dense (repeatable).
    #[arg(long)]
    skip: Vec<String>,
    /// SparseGPT: round the kept values after pruning instead of in the walk.
    /// By default SparseGPT prunes and quantizes in one pass (each kept value
    /// rounded when the walk reaches it, its error fed forward like a pruned
    /// weight's) whenever the values are q8_0, q4_0 or q4_1.
    #[arg(long)]
    round_after: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn prune(a: PruneArgs) -> Result<()> {
    let method = PruneMethod::parse(&a.method)
        .ok_or_else(|| anyhow!("--method must be magnitude, wanda or sparsegpt"))?;
    let (pattern, sparsity) = match (&a.pattern, a.sparsity) {
        (Some(p), _) => (Pattern::parse(p)?, 0.0),
        (None, Some(s)) if (0.0..1.0).contains(&s) => (Pattern::Unstructured, s),
        (None, Some(s)) => return Err(anyhow!("--sparsity {s} must be at least 0 and below 1")),
        (None, None) => return Err(anyhow!("give --sparsity or --pattern")),
    };
    let values = lottery::models::quantize::parse_format(&a.values)
        .ok_or_else(|| anyhow!("unknown --values `{}`", a.values))?;
    let layer_sparsity = match a.layer_sparsity.as_str() {
        "uniform" => LayerSparsity::Uniform,
        // The OWL paper's settings: outliers above 5x the layer's mean
        // score, sparsities within +-8 points of the target.
        "owl" => LayerSparsity::Owl {
            m: 5.0,
            lambda: 0.08,
        },
        o => {
            return Err(anyhow!(
                "--layer-sparsity must be uniform or owl, got `{o}`"
            ))
        }
    };
    if layer_sparsity != LayerSparsity::Uniform && pattern != Pattern::Unstructured {
        return Err(anyhow!(
            "--layer-sparsity owl needs --sparsity (an N:M pattern fixes every layer's)"
        ));
    }
    if a.round_after && method != PruneMethod::SparseGpt {
        return Err(anyhow!(
            "--round-after is SparseGPT's (--method {} rounds after pruning anyway)",
            method.name()
        ));
    }
    let joint = !a.round_after && check_joint(method, values).is_ok();
    let src = GgufFile::open(&a.input)?;
    let t0 = Instant::now();
    let stats: PruneStats = match (&a.calibration, method.needs_calibration()) {
        (None, true) => {
            return Err(anyhow!(
                "--method {} needs --calibration TEXT",
                method.name()
            ))
        }
        (None, false) => PruneStats::new(),
        (Some(path), _) => {
            let gram = method == PruneMethod::SparseGpt;
            let st = super::calibrate(&src, &a.input, path, a.calib_tokens, gram, |binding| {
                a.gpu.open(binding)
            })?;
            st.into_iter().collect()
        }
    };
    let opts = PruneOptions {
        method,
        pattern,
        sparsity,
        values,
        layer_sparsity,
        skip: a.skip.clone(),
        joint,
    };
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("pruning [{bar:30}] {pos}/{len} {elapsed}")
            .map_err(|e| anyhow!("{e}"))?
            .progress_chars("=> "),
    );
    let (w, report) = prune_gguf(&src, &opts, &stats, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    w.write_file(&a.out)?;
    let back =
        GgufFile::open(&a.out).with_context(|| format!("reading back {}", a.out.display()))?;
    println!("layer  sparsity  bits/weight  rel. output error (mean / worst of its weights)");
    let layers = report.iter().map(|r| r.layer + 1).max().unwrap_or(0);
    let (mut sum_bits, mut sum_w) = (0.0, 0.0);
    for l in 0..layers {
        let rs: Vec<_> = report.iter().filter(|r| r.layer == l).collect();
        if rs.is_empty() {
            continue;
        }
        let mean = |f: &dyn Fn(&lottery::models::prune::PruneReport) -> f64| {
            rs.iter().map(|r| f(r)).sum::<f64>() / rs.len() as f64
        };
        let worst = rs.iter().map(|r| r.rel_error).fold(0.0, f64::max);
        println!(
            "{l:5}  {:7.1}%  {:11.3}  {:.4} / {:.4}",
            100.0 * mean(&|r| r.sparsity),
            mean(&|r| r.bits_per_weight),
            mean(&|r| r.rel_error),
            worst
        );
    }
    for r in &report {
        let dims = lottery::models::arch::llama::weight_dims(&back, &r.name)?;
        let n = (dims.0 * dims.1) as f64;
        sum_bits += r.bits_per_weight * n;
        sum_w += n;
    }
    println!(
        "pruned {} weights ({}, {} values, {}{}): {:.3} bits per weight in them; wrote {} ({:.1} MB, was {:.1} MB) in {:.1}s",
        report.len(),
        pattern.name(),
        values.name(),
        method.name(),
        if joint { ", joint" } else { "" },
        sum_bits / sum_w.max(1.0),
        a.out.display(),
        back.file_len() as f64 / 1e6,
        src.file_len() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
