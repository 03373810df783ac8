//! `lottery doctor`: what GPUs this machine exposes and whether every kernel
//! is correct on them. The report (table + JSON) is what to attach to a bug
//! report about an adapter.

use anyhow::{anyhow, Result};
use clap::Args;
use lottery::engine::conformance::{self, CaseResult};
use lottery::engine::gpu::{list_adapters, AdapterSummary};
use lottery::engine::{Gpu, GpuOptions, Tier};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct DoctorArgs {
    /// Check every adapter on every tier it supports (default: the best adapter, its best tier).
    #[arg(long)]
    all: bool,
    /// Backend to check: vulkan, metal, dx12, gl.
    #[arg(long)]
    backend: Option<String>,
    /// Adapter index (see the list doctor prints).
    #[arg(long)]
    adapter: Option<usize>,
    /// Tier to force: portable, f16, subgroup, full.
    #[arg(long)]
    tier: Option<String>,
    /// One shape per case instead of three.
    #[arg(long)]
    quick: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn adapter_json(i: usize, a: &AdapterSummary) -> serde_json::Value {
    let l = &a.limits;
    serde_json::json!({
        "index": i, "name": a.name, "backend": a.backend, "driver": a.driver, "device_type": a.device_type,
        "shader_f16": a.shader_f16, "subgroups": a.subgroups, "timestamps": a.timestamps,
        "limits": {
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_buffer_size": l.max_buffer_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
        },
    })
}

fn case_json(r: &CaseResult) -> serde_json::Value {
    serde_json::json!({
        "kernel": r.kernel, "format": r.format, "variant": r.variant, "tier": r.tier,
        "max_abs_err": if r.max_abs.is_finite() { serde_json::json!(r.max_abs) } else { serde_json::Value::Null },
        "max_rel_err": if r.max_rel.is_finite() { serde_json::json!(r.max_rel) } else { serde_json::Value::Null },
        "passed": r.passed, "ms": r.ms, "detail": r.detail,
    })
}

pub fn doctor(a: DoctorArgs) -> Result<()> {
    let adapters = list_adapters(a.backend.as_deref())?;
    println!("{} adapter(s):", adapters.len());
    for (i, ad) in adapters.iter().enumerate() {
        println!(
            "  [{i}] {} ({}, {}) driver: {}\n      shader-f16 {} subgroups {} timestamps {}; max binding {} MiB, workgroup {} invocations / {} KiB",
            ad.name,
            ad.backend,
            ad.device_type,
            ad.driver,
            ad.shader_f16,
            ad.subgroups,
            ad.timestamps,
            ad.limits.max_storage_buffer_binding_size >> 20,
            ad.limits.max_compute_invocations_per_workgroup,
            ad.limits.max_compute_workgroup_storage_size >> 10
        );
    }
    if adapters.is_empty() {
        return Err(lottery::engine::Error::NoAdapter(None).into());
    }
    let forced = match &a.tier {
        Some(t) => Some(
            Tier::parse(t)
                .ok_or_else(|| anyhow!("--tier must be portable, f16, subgroup or full"))?,
        ),
        None => None,
    };
    // (adapter index or None for the default pick, tier or None for its best)
    let mut runs: Vec<(Option<usize>, Option<Tier>)> = Vec::new();
    if a.all {
        for (i, ad) in adapters.iter().enumerate() {
            let mut f = wgpu::Features::empty();
            if ad.shader_f16 {
                f |= wgpu::Features::SHADER_F16;
            }
            if ad.subgroups {
                f |= wgpu::Features::SUBGROUP;
            }
            for t in Tier::supported(f) {
                if forced.is_none() || forced == Some(t) {
                    runs.push((Some(i), Some(t)));
                }
            }
        }
    } else {
        runs.push((a.adapter, forced));
    }
    let mut report = Vec::new();
    let mut failures = 0;
    let t0 = Instant::now();
    for (index, tier) in runs {
        let mut gpu = Gpu::new(&GpuOptions {
            backend: a.backend.clone(),
            adapter_index: index,
            tier,
            ..Default::default()
        })?;
        println!(
            "\nconformance on {} ({}), tier {}, matvec default {:?}:",
            gpu.adapter.name,
            gpu.adapter.backend,
            gpu.tier.name(),
            gpu.matvec
        );
        println!(
            "  {:<18} {:<7} {:<22} {:>10} {:>10} {:>8}  result",
            "kernel", "format", "variant", "max abs", "max rel", "ms"
        );
        let results = conformance::run_suite(&mut gpu, a.quick);
        for r in &results {
            println!(
                "  {:<18} {:<7} {:<22} {:>10.2e} {:>10.2e} {:>8.1}  {}",
                r.kernel,
                r.format,
                r.variant,
                r.max_abs,
                r.max_rel,
                r.ms,
                if r.passed {
                    "pass".to_string()
                } else {
                    format!("FAIL {}", r.detail)
                }
            );
        }
        let failed = results.iter().filter(|r| !r.passed).count();
        failures += failed;
        println!("  {} passed, {} failed", results.len() - failed, failed);
        let i = adapters
            .iter()
            .position(|x| x.name == gpu.adapter.name && x.backend == gpu.adapter.backend)
            .unwrap_or(0);
        report.push(serde_json::json!({
            "adapter": adapter_json(i, &adapters[i]),
            "tier": gpu.tier.name(),
            "cases": results.iter().map(case_json).collect::<Vec<_>>(),
            "passed": results.len() - failed,
            "failed": failed,
        }));
    }
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "lottery": env!("CARGO_PKG_VERSION"),
            "adapters": adapters.iter().enumerate().map(|(i, a)| adapter_json(i, a)).collect::<Vec<_>>(),
            "runs": report,
            "failed": failures,
            "seconds": t0.elapsed().as_secs_f64(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        println!("\nreport written to {}", path.display());
    }
    if failures > 0 {
        return Err(anyhow!(
            "{failures} conformance case(s) failed; attach the report (--json) to a bug report"
        ));
    }
    println!(
        "\nall conformance cases passed ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
