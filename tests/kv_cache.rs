//! The compressed KV cache on the real model: passkey retrieval (protocol of
//! ../shared/CAPABILITY.md, seeded cases from `lottery::models::eval`) at
//! about 1,024 tokens survives 4-bit values, (mostly) 4-bit keys, and
//! Quest's page selection and SnapKV's eviction to half the prompt;
//! a sink + window ring is the negative control (it must miss a key outside
//! its window, and does); and a ring generates past its capacity.

mod common;
use common::*;
use lottery::models::eval::{self, Case};
use lottery::models::{GenerateOptions, Session, SessionOptions};
use lottery::{KvDtype, KvPolicy, KvTypes};
use std::process::Command;

fn answer(kv: KvTypes, policy: KvPolicy, c: &Case) -> String {
    let model = load_model();
    let mut s = Session::new(
        model.clone(),
        SessionOptions {
            ctx: 1152,
            kv,
            kv_policy: policy,
            ..Default::default()
        },
    )
    .unwrap();
    let ids = model.tokenizer.encode(&c.prompt).unwrap();
    assert!(ids.len() > 1000, "about 1,024 tokens: {}", ids.len());
    s.generate(
        &ids,
        &GenerateOptions {
            max_tokens: c.max_tokens,
            ..Default::default()
        },
        |_, _| true,
    )
    .unwrap()
    .text
}

/// Seeded cases at different depths (of the 20-trial sweep).
fn cases(trials: &[usize]) -> Vec<Case> {
    let all = eval::passkey(1024, 20, 8).unwrap();
    trials.iter().map(|&t| all[t].clone()).collect()
}

#[test]
fn passkey_1024_with_an_8_bit_key_4_bit_value_cache() {
    for c in cases(&[13]) {
        let out = answer(
            KvTypes::new(KvDtype::Q8_0, KvDtype::Q4_0),
            KvPolicy::Full,
            &c,
        );
        assert!(eval::correct(&c, &out), "key {} got {out:?}", c.answer);
    }
}

#[test]
fn passkey_1024_with_a_q4_0_cache_mostly() {
    // q4_0 for keys and values finds 19 of 20 keys at this length (seed 0,
    // BENCHMARKS.md 2026-12-03, with the exact sink row): 4-bit keys and
    // values together blur the one position that matters now and then.
    // Checked as measured: at least 2 of these 3.
    let found = cases(&[4, 9, 13])
        .iter()
        .filter(|c| eval::correct(c, &answer(KvDtype::Q4_0.into(), KvPolicy::Full, c)))
        .count();
    assert!(found >= 2, "q4_0 found {found} of 3 keys");
}

#[test]
fn passkey_1024_with_quest_at_a_quarter_of_the_pages() {
    // 1,152 slots in pages of 8: 144 pages; 30 chosen + first + current =
    // 32, under a quarter of the ~129 pages the prompt fills.
    let quest = KvPolicy::Quest { page: 8, top: 30 };
    for c in cases(&[4]) {
        let out = answer(KvDtype::F16.into(), quest, &c);
        assert!(eval::correct(&c, &out), "key {} got {out:?}", c.answer);
    }
}

#[test]
fn passkey_1024_with_snapkv_at_half_the_prompt() {
    // SnapKV keeps 512 scored positions per KV head plus the 32-query
    // window of a ~1,028-token prompt. At half the prompt it found 18 of 20
    // keys (seed 0); at a quarter (256) only 12, the misses keeping the
    // first digits of the key and losing the last (EVAL.md, BENCHMARKS.md),
    // so a quarter is measured there, not asserted here.
    let snap = KvPolicy::SnapKv {
        budget: 512,
        window: 32,
        kernel: 7,
    };
    for c in cases(&[9]) {
        let out = answer(KvDtype::F16.into(), snap, &c);
        assert!(eval::correct(&c, &out), "key {} got {out:?}", c.answer);
    }
}

#[test]
fn sink_window_misses_a_key_outside_its_window() {
    // A sink of 40 positions holds the task's first line (with only 4 the
    // model, seeing no instruction, answers anything: BENCHMARKS.md).
    let ring = KvPolicy::SinkWindow {
        sink: 40,
        window: 256,
    };
    let all = eval::passkey(1024, 20, 8).unwrap();
    // Negative control: the key sits about 500 tokens before the question,
    // outside the last 256 positions, so the ring cannot have it.
    let mid = &all[10];
    let out = answer(KvDtype::F16.into(), ring, mid);
    assert!(
        !eval::correct(mid, &out),
        "a 256-token window cannot see a key ~500 tokens back, yet answered {out:?}"
    );
    // Positive control: the last trial's key is right before the question.
    let last = &all[19];
    let out = answer(KvDtype::F16.into(), ring, last);
    assert!(eval::correct(last, &out), "key {} got {out:?}", last.answer);
}

#[test]
fn a_ring_generates_1000_tokens_past_a_512_context() {
    let out = Command::new(env!("CARGO_BIN_EXE_lottery"))
        .env("LOTTERY_MODEL", model_path())
        .args([
            "run",
            "--prompt",
            "Once upon a time",
            "-n",
            "1000",
            "--ignore-eos",
            "--ctx",
            "512",
            "--kv",
            "q8_0",
            "--kv-policy",
            "sink-window:4,256",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lottery run failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&v["ids"]).len(), 1000);
    let kv = &v["kv"];
    assert_eq!(kv["policy"], "sink-window:4,256");
    assert!(kv["positions"].as_u64().unwrap() > 1000);
    assert_eq!(kv["positions_kept"], 4 + 256);
}
