//! Every kernel against its CPU reference (f64 accumulation) on seeded random
//! inputs with odd shapes: the conformance suite (the same code `lottery
//! doctor` runs) on every tier the adapter supports, plus the cases that need
//! a device of their own.

#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::{assert_close, gpu};
use lottery_engine::conformance::{self, step};
use lottery_engine::formats::{self, GpuWeight};
use lottery_engine::gpu::StepBuffer;
use lottery_engine::ops::{self, MatvecOpts};
use lottery_engine::reference::{self as cpu, Rng};
use lottery_engine::{Gpu, GpuOptions, Tier, WeightFormat};

fn weight(
    gpu: &Gpu,
    rng: &mut Rng,
    fmt: WeightFormat,
    n: usize,
    k: usize,
) -> (GpuWeight, Vec<f32>) {
    conformance::random_weight(gpu, rng, fmt, n, k).unwrap()
}

#[test]
fn conformance_suite_on_every_supported_tier() {
    let features = gpu().device.features();
    let tiers = Tier::supported(features);
    assert!(tiers.contains(&Tier::Portable));
    // The whole suite on the portable tier (no features: GL, WebGPU without
    // f16) and on the adapter's best tier (what a session picks); the tiers
    // between, each one feature alone, run every kernel and variant on the
    // quick shapes. Four full passes were a third of CI's time on lavapipe.
    let best = *tiers.last().unwrap();
    // A second backend over the same WGSL (CI's llvmpipe GL, where the full
    // shapes took 16 of CI's minutes) checks its translation on the quick
    // shapes of every kernel and variant: LOTTERY_CONFORMANCE=quick.
    let all_quick = std::env::var("LOTTERY_CONFORMANCE").is_ok_and(|v| v == "quick");
    for tier in tiers {
        let mut gpu = Gpu::new(&GpuOptions {
            tier: Some(tier),
            ..Default::default()
        })
        .unwrap();
        let quick = all_quick || (tier != Tier::Portable && tier != best);
        let results = conformance::run_suite(&mut gpu, quick);
        assert!(results.len() > 60, "suite ran only {} cases", results.len());
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| {
                format!(
                    "{} {} {} [{}]: {}",
                    r.kernel, r.format, r.variant, r.tier, r.detail
                )
            })
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} cases failed on tier {tier:?}:\n{}",
            failed.len(),
            results.len(),
            failed.join("\n")
        );
        eprintln!(
            "{} ({}), tier {tier:?}{}: {} cases passed",
            gpu.adapter.name,
            gpu.adapter.backend,
            if quick { " (quick shapes)" } else { "" },
            results.len()
        );
    }
}

#[test]
fn matvec_last_row_reads_the_last_token() {
    let gpu = gpu();
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(2);
    let (n, k, t) = (19, 64, 5);
    let (w, deq) = weight(&gpu, &mut rng, WeightFormat::Q8_0, n, k);
    let x = rng.vec(t * k, 1.0);
    let xt = gpu.upload("x", &x).unwrap();
    let yt = gpu.zeros("y", n as u64 * 4).unwrap();
    let d = ops::matvec(
        &gpu,
        &sb,
        &w,
        &xt,
        &yt,
        MatvecOpts {
            last_row: true,
            x_stride: k as u32,
            ..Default::default()
        },
    )
    .unwrap();
    gpu.run(&sb, &step(t as u32, 0), &d).unwrap();
    let want = cpu::matmul(&x[(t - 1) * k..], &deq, 1, n, k);
    assert_close(
        "matvec last_row",
        &gpu.read::<f32>(&yt).unwrap()[..n],
        &want,
        1e-4,
        1e-4,
    );
}

#[test]
fn weights_split_under_a_small_binding_limit() {
    let gpu = Gpu::new(&GpuOptions {
        storage_binding_limit: Some(32 << 10),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        gpu.max_binding(),
        32 << 10,
        "the device must enforce the requested limit"
    );
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(10);
    use conformance::WeightKind;
    use formats::{Pattern, SparseFormat};
    for kind in [
        WeightKind::Dense(WeightFormat::Q8_0),
        WeightKind::Dense(WeightFormat::F32),
        WeightKind::Dense(WeightFormat::Q4_1),
        WeightKind::Sparse(SparseFormat {
            pattern: Pattern::Unstructured,
            values: WeightFormat::Q4_0,
        }),
        WeightKind::Sparse(SparseFormat {
            pattern: Pattern::NM { n: 2, m: 4 },
            values: WeightFormat::Q8_0,
        }),
    ] {
        let name = kind.name();
        let (n, k, t) = (700usize, kind.odd_k(), 9usize);
        let (w, deq) = conformance::random_kind_weight(&gpu, &mut rng, kind, n, k).unwrap();
        assert!(
            w.parts.len() > 1,
            "{}: expected a split, got one part of {} bytes",
            name,
            w.bytes()
        );
        let x = rng.vec(t * k, 1.0);
        let xt = gpu.upload("x", &x).unwrap();
        let yt = gpu.zeros("y", (t * n * 4) as u64).unwrap();
        let d = ops::matmul(&gpu, &sb, &w, &xt, &yt, false, t as u32).unwrap();
        gpu.run(&sb, &step(t as u32, 0), &d).unwrap();
        assert_close(
            &format!("split matmul {} ({} parts)", name, w.parts.len()),
            &gpu.read::<f32>(&yt).unwrap(),
            &cpu::matmul(&x, &deq, t, n, k),
            1e-4,
            1e-4,
        );
        let y1 = gpu.zeros("y1", (n * 4) as u64).unwrap();
        let d = ops::matvec(&gpu, &sb, &w, &xt, &y1, MatvecOpts::default()).unwrap();
        gpu.run(&sb, &step(1, 0), &d).unwrap();
        assert_close(
            &format!("split matvec {}", name),
            &gpu.read::<f32>(&y1).unwrap(),
            &cpu::matmul(&x[..k], &deq, 1, n, k),
            1e-4,
            1e-4,
        );
        // The same rows as an embedding table, with ids in every part.
        let toks: Vec<u32> = vec![0, 699, 350, 1, 698, 123];
        let tt = gpu.upload("tokens", &toks).unwrap();
        let out = gpu.zeros("out", (toks.len() * k * 4) as u64).unwrap();
        let d = ops::embed(&gpu, &sb, &w, &tt, &out, toks.len() as u32).unwrap();
        gpu.run(&sb, &step(toks.len() as u32, 0), &d).unwrap();
        let want: Vec<f32> = toks
            .iter()
            .flat_map(|t| deq[*t as usize * k..][..k].to_vec())
            .collect();
        assert_close(
            &format!("split embed {}", name),
            &gpu.read::<f32>(&out).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
    // A single row larger than the limit is a clear error, not a panic.
    let big = formats::quantize(WeightFormat::F32, &vec![0.0; 16 << 10]).unwrap();
    let e = GpuWeight::upload(&gpu, "huge", WeightFormat::F32, &big, 1, 16 << 10)
        .err()
        .expect("must fail");
    assert!(e.to_string().contains("huge"), "{e}");
}
