//! End to end on the real model against the independent reference in
//! ../shared/golden: teacher-forced logits at every golden position, then
//! greedy tokens up to the first reference near-tie.

mod common;
use common::*;
use lottery::engine::kv::KvDtype;
use lottery::engine::{GpuOptions, Tier};
use lottery::models::{GenerateOptions, Session, SessionOptions};

fn check_logits(kv: KvDtype, tol: f32, gap_min: f32) {
    let model = load_model();
    let g = golden();
    let vocab = model.config.vocab;
    let mut worst = 0f32;
    for p in g["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let input = ids(&p["input_ids"]);
        let mut s = Session::new(
            model.clone(),
            SessionOptions {
                kv: kv.into(),
                ctx: 1024,
                max_batch: 64,
                logit_rows: 64,
                ..Default::default()
            },
        )
        .unwrap();
        let logits = s.logits(&input).unwrap();
        let positions = ids(&p["logits_positions"]);
        for (j, pos) in positions.iter().enumerate() {
            let row = &logits[*pos as usize * vocab..][..vocab];
            let top_ids = ids(&p["top_ids"][j]);
            let top: Vec<f32> = p["top_logits"][j]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            for (id, want) in top_ids.iter().zip(&top) {
                let got = row[*id as usize];
                let err = (got - want).abs();
                worst = worst.max(err);
                assert!(err <= tol, "{name} pos {pos} token {id}: expected {want}, got {got} (|err| {err} > {tol}, kv {kv:?})");
            }
            if top[0] - top[1] > gap_min {
                let am = lottery::engine::reference::argmax(row);
                assert_eq!(
                    am as u32,
                    top_ids[0],
                    "{name} pos {pos}: argmax {am}, reference {} (gap {})",
                    top_ids[0],
                    top[0] - top[1]
                );
            }
        }
    }
    eprintln!("kv {kv:?}: worst top-20 logit error {worst:.4}");
}

#[test]
fn teacher_forced_logits_f32_kv() {
    check_logits(KvDtype::F32, 1e-2, 0.02);
}

#[test]
fn teacher_forced_logits_f16_kv() {
    check_logits(KvDtype::F16, 0.1, 0.1);
}

fn check_greedy(kv: KvDtype, gap_min: f64) {
    let model = load_model();
    let g = golden();
    for p in g["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let want = ids(&p["greedy"]["ids"]);
        // Compare up to (and including) the last step before the first near-tie.
        let steps = p["greedy"]["step_top5"].as_array().unwrap();
        let mut n = want.len();
        for (i, st) in steps.iter().enumerate() {
            let l: Vec<f64> = st["top_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            if l.len() >= 2 && l[0] - l[1] < gap_min {
                n = i;
                break;
            }
        }
        let mut s = Session::new(
            model.clone(),
            SessionOptions {
                kv: kv.into(),
                ctx: 1024,
                ..Default::default()
            },
        )
        .unwrap();
        let opts = GenerateOptions {
            max_tokens: n.max(1),
            stop_at_eos: false,
            ..Default::default()
        };
        let out = s
            .generate(&ids(&p["input_ids"]), &opts, |_, _| true)
            .unwrap();
        assert_eq!(
            &out.ids[..n],
            &want[..n],
            "{name}: greedy tokens differ (kv {kv:?}) within the first {n} steps"
        );
        eprintln!("{name}: {n} greedy tokens match");
    }
}

#[test]
fn greedy_tokens_f32_kv() {
    check_greedy(KvDtype::F32, 0.02);
}

#[test]
fn greedy_tokens_f16_kv() {
    check_greedy(KvDtype::F16, 0.1);
}

/// Every tier the adapter supports, and devices with small per-binding limits
/// (the 30 MiB embedding split into parts at 8 MiB), give the reference's
/// greedy tokens on the short golden prompts.
#[test]
fn greedy_tokens_on_every_tier_and_small_limits() {
    let g = golden();
    let prompts: Vec<&serde_json::Value> = g["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "plain_capital" || p["name"] == "chat_haiku")
        .collect();
    let features = {
        let gpu = lottery::engine::Gpu::new(&Default::default()).unwrap();
        gpu.device.features()
    };
    let mut configs: Vec<GpuOptions> = Tier::supported(features)
        .into_iter()
        .map(|t| GpuOptions {
            tier: Some(t),
            ..Default::default()
        })
        .collect();
    for limit in [32u64 << 20, 8 << 20] {
        configs.push(GpuOptions {
            storage_binding_limit: Some(limit),
            tier: Some(Tier::Portable),
            ..Default::default()
        });
    }
    for opts in configs {
        let model = load_model_with(&opts);
        assert_eq!(
            model.gpu.max_binding().min(1 << 30),
            opts.storage_binding_limit
                .unwrap_or(model.gpu.max_binding())
                .min(1 << 30)
        );
        for p in &prompts {
            let want = ids(&p["greedy"]["ids"]);
            let n = 8;
            let mut s = Session::new(
                model.clone(),
                SessionOptions {
                    ctx: 256,
                    ..Default::default()
                },
            )
            .unwrap();
            let out = s
                .generate(
                    &ids(&p["input_ids"]),
                    &GenerateOptions {
                        max_tokens: n,
                        stop_at_eos: false,
                        ..Default::default()
                    },
                    |_, _| true,
                )
                .unwrap();
            assert_eq!(
                out.ids,
                want[..n],
                "{} with {opts:?} (tier {:?})",
                p["name"],
                model.gpu.tier
            );
        }
        eprintln!(
            "tier {:?}, binding limit {} MiB: tokens match",
            model.gpu.tier,
            model.gpu.max_binding() >> 20
        );
    }
}
