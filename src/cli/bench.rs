//! `lottery bench`: time to first token, prefill and decode throughput, the
//! weight bandwidth a decode step achieves, and how that compares with the
//! adapter's own buffer-copy bandwidth measured on the spot.

use super::ModelArgs;
use anyhow::Result;
use clap::Args;
use lottery::{GenerateOptions, Gpu};
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Decode steps to time.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Repetitions (the best is reported).
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Also time each kernel of a decode step on its own, grouped by kernel.
    #[arg(long)]
    per_kernel: bool,
    /// Also probe the adapter's own ceilings (storage-load rate per access
    /// pattern, peak multiply-add rate) and print the speed they allow.
    #[arg(long)]
    limits: bool,
    /// Positions already in the cache before the timed prompt and decode
    /// (long-context decode: how attention and the KV type scale).
    #[arg(long, default_value_t = 0)]
    ctx_fill: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Device-to-device copy bandwidth in GB/s (bytes read + written count once each way).
fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let bytes: u64 = (64 << 20).min(gpu.max_binding());
    let a = gpu.zeros("bench.copy.a", bytes)?;
    let b = gpu.zeros("bench.copy.b", bytes)?;
    let mut best = f64::MAX;
    for i in 0..4 {
        let t0 = Instant::now();
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for _ in 0..4 {
            enc.copy_buffer_to_buffer(&a.buffer, 0, &b.buffer, 0, bytes);
        }
        gpu.queue.submit([enc.finish()]);
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if i > 0 {
            best = best.min(t0.elapsed().as_secs_f64());
        }
    }
    // A copy reads and writes each byte; count both, as memory bandwidth.
    Ok(4.0 * 2.0 * bytes as f64 / best / 1e9)
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let model = a.model.load(a.json)?;
    let gpu = &model.gpu;
    let copy = copy_bandwidth(gpu)?;
    let base = model.tokenizer.encode(
        "The history of the lighthouse is, in many ways, the history of maritime trade itself. ",
    )?;
    let prompt: Vec<u32> = base
        .iter()
        .cycle()
        .take(a.prompt_tokens.max(1))
        .copied()
        .collect();
    let opts = GenerateOptions {
        max_tokens: a.decode_tokens + 1,
        stop_at_eos: false,
        ..Default::default()
    };
    // Warm-up: compiles every pipeline (JIT drivers compile on first use).
    let mut s = a.model.session(&model)?;
    s.generate(
        &prompt[..prompt.len().min(16)],
        &GenerateOptions {
            max_tokens: 3,
            stop_at_eos: false,
            ..Default::default()
        },
        |_, _| true,
    )?;
    let (mut ttft, mut prefill, mut decode) = (f64::MAX, 0f64, 0f64);
    let kv = a.model.kv_types()?;
    let c = &model.config;
    let kv_per_token = kv.bytes_per_token(c.n_layer as u32, c.n_kv_head as u32, c.head_dim as u32);
    let filler: Vec<u32> = base.iter().cycle().take(a.ctx_fill).copied().collect();
    for _ in 0..a.reps.max(1) {
        let mut s = a.model.session(&model)?;
        if !filler.is_empty() {
            s.feed(&filler)?;
        }
        let g = s.generate(&prompt, &opts, |_, _| true)?;
        ttft = ttft.min(g.ttft_s);
        prefill = prefill.max(g.prefill_tokens_per_s());
        decode = decode.max(g.decode_tokens_per_s());
    }
    let mut profile = serde_json::Value::Null;
    if a.per_kernel {
        let mut s = a.model.session(&model)?;
        let n = prompt.len().min(s.context_len() / 2);
        print_profile(
            &format!("prefill of {n} tokens"),
            "each dispatch submitted alone",
            &s.profile_step(&prompt[..n])?,
        );
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.extend(s.profile_step(&prompt[..1])?);
        }
        print_profile(
            "decode step (mean of 3)",
            "each dispatch submitted alone",
            &runs
                .iter()
                .map(|(l, t)| (l.clone(), t / 3.0))
                .collect::<Vec<_>>(),
        );
        let pre = s.profile_step_gpu(&prompt[..n.min(s.context_len() - s.position() - 2)])?;
        let dec = s.profile_step_gpu(&prompt[..1])?;
        let wall = 1.0 / decode.max(1e-9);
        let mut parts = Vec::new();
        for (what, p) in [("prefill", &pre), ("decode", &dec)] {
            eprintln!(
                "{what} step: {} dispatches; CPU records it in {:.3} ms and submits it in {:.3} ms{}",
                p.dispatches,
                p.record_s * 1e3,
                p.submit_s * 1e3,
                if what == "decode" {
                    format!("; a decode token takes {:.3} ms of wall time", wall * 1e3)
                } else {
                    String::new()
                }
            );
            if let Some(g) = &p.gpu {
                let sum: f64 = g.dispatches.iter().map(|d| d.1).sum();
                eprintln!(
                    "  GPU: {:.3} ms as one pass; {:.3} ms summed over dispatches each in its own pass",
                    g.step_s * 1e3,
                    sum * 1e3
                );
                print_profile(
                    &format!("{what} step"),
                    "GPU timestamps, one pass per dispatch, one submit",
                    &g.dispatches,
                );
            }
            parts.push(serde_json::json!({
                "what": what, "dispatches": p.dispatches,
                "record_ms": p.record_s * 1e3, "submit_ms": p.submit_s * 1e3,
                "gpu_step_ms": p.gpu.as_ref().map(|g| g.step_s * 1e3),
                "gpu_per_kernel_ms": p.gpu.as_ref().map(|g| by_kernel(&g.dispatches).into_iter()
                    .map(|(k, (n, t))| serde_json::json!({"kernel": k, "dispatches": n, "ms": t * 1e3}))
                    .collect::<Vec<_>>()),
            }));
        }
        profile = serde_json::json!({"decode_wall_ms": wall * 1e3, "steps": parts});
    }
    let wbytes = model.weights.decode_bytes() as f64;
    let gbs = wbytes * decode / 1e9;
    // Multiply-adds per prompt token: every layer matrix once (the LM head
    // runs for the last token only).
    let macs: f64 = model
        .weights
        .layers
        .iter()
        .map(|l| {
            [&l.wqkv, &l.wo, &l.w_gate_up, &l.w_down]
                .iter()
                .map(|w| (w.n * w.k) as f64)
                .sum::<f64>()
        })
        .sum();
    let limits = if a.limits {
        Some(lottery::engine::ops::measure_adapter_limits(
            gpu,
            wbytes as u64,
        )?)
    } else {
        None
    };
    let bounds = limits
        .as_ref()
        .map(|l| (l.best_load_gb_per_s() * 1e9 / wbytes, l.fma_per_s / macs));
    let ad = &gpu.adapter;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "adapter": ad.name, "backend": ad.backend, "driver": ad.driver,
                "model": model.path.display().to_string(), "kv": kv.label(), "kv_bytes_per_token": kv_per_token,
                "prompt_tokens": prompt.len(), "ctx_fill": a.ctx_fill, "decode_tokens": a.decode_tokens,
                "ttft_s": ttft, "prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode,
                "weight_bytes_per_token": wbytes, "decode_weight_gb_per_s": gbs,
                "copy_gb_per_s": copy, "fraction_of_copy_bandwidth": gbs / copy,
                "profile": profile,
                "limits": limits.as_ref().map(|l| serde_json::json!({
                    "loads_gb_per_s": l.loads.iter().map(|(k, v)| serde_json::json!({"pattern": k, "gb_per_s": v})).collect::<Vec<_>>(),
                    "fma_per_s": l.fma_per_s,
                    "macs_per_prompt_token": macs,
                    "decode_bound_tokens_per_s": bounds.map(|b| b.0),
                    "prefill_bound_tokens_per_s": bounds.map(|b| b.1),
                })),
            })
        );
    } else {
        println!("adapter      {} ({}, {})", ad.name, ad.backend, ad.driver);
        println!(
            "model        {} (kv {}, {} KV bytes per token)",
            model.path.display(),
            kv.label(),
            kv_per_token
        );
        println!(
            "ttft         {:.3} s for {} prompt tokens{}",
            ttft,
            prompt.len(),
            if a.ctx_fill > 0 {
                format!(" after {} cached positions", a.ctx_fill)
            } else {
                String::new()
            }
        );
        println!("prefill      {:.1} tokens/s", prefill);
        println!(
            "decode       {:.2} tokens/s ({} tokens)",
            decode, a.decode_tokens
        );
        println!(
            "weights      {:.1} MB read per decode token -> {:.2} GB/s",
            wbytes / 1e6,
            gbs
        );
        println!(
            "copy         {:.2} GB/s measured buffer copy (read + write)",
            copy
        );
        println!("fraction     {:.1}% of copy bandwidth", 100.0 * gbs / copy);
        if let (Some(l), Some((dec_bound, pre_bound))) = (&limits, bounds) {
            println!("adapter probes (ceilings no kernel can pass on this adapter):");
            for (pattern, g) in &l.loads {
                println!("  storage loads, {pattern:<38} {g:7.2} GB/s");
            }
            println!(
                "  f32 multiply-adds, registers only          {:7.2} G/s",
                l.fma_per_s / 1e9
            );
            println!(
                "  decode  <= {dec_bound:.1} tokens/s  (best load rate / {:.1} MB of weights per token)",
                wbytes / 1e6
            );
            println!(
                "  prefill <= {pre_bound:.1} tokens/s  (multiply-add rate / {:.1} M multiply-adds per token, dequantisation and attention not counted)",
                macs / 1e6
            );
        }
    }
    Ok(())
}

/// Sums per-dispatch times by kernel (the label's first word).
fn by_kernel(runs: &[(String, f64)]) -> std::collections::BTreeMap<String, (usize, f64)> {
    let mut by = std::collections::BTreeMap::<String, (usize, f64)>::new();
    for (label, t) in runs {
        let e = by
            .entry(label.split(' ').next().unwrap_or("").to_string())
            .or_default();
        e.0 += 1;
        e.1 += t;
    }
    by
}

fn print_profile(what: &str, how: &str, runs: &[(String, f64)]) {
    let by = by_kernel(runs);
    let total: f64 = by.values().map(|v| v.1).sum();
    eprintln!(
        "per-kernel time, {what} ({how}; total {:.3} ms):",
        total * 1e3
    );
    for (k, (n, t)) in &by {
        eprintln!(
            "  {k:20} {n:4} dispatches {:9.3} ms {:5.1}%",
            t * 1e3,
            100.0 * t / total
        );
    }
}
