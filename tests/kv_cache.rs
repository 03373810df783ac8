//! The compressed KV cache on the real model: passkey retrieval (protocol of
//! ../shared/CAPABILITY.md, seeded cases from `lottery::models::eval`) at
//! about 1,024 tokens survives a 4-bit cache and Quest's page selection;
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

/// Two seeded cases at different depths (of the 20-trial sweep).
fn cases() -> Vec<Case> {
    let all = eval::passkey(1024, 20, 8).unwrap();
    vec![all[4].clone(), all[13].clone()]
}

#[test]
fn passkey_1024_with_a_q4_0_cache() {
    for c in cases() {
        let out = answer(KvDtype::Q4_0.into(), KvPolicy::Full, &c);
        assert!(eval::correct(&c, &out), "key {} got {out:?}", c.answer);
    }
}

#[test]
fn passkey_1024_with_quest_at_a_quarter_of_the_pages() {
    // 1,152 slots in pages of 16: 72 pages; 14 chosen + first + current = 16,
    // under a quarter, reading 256 of about 1,040 positions per step.
    let quest = KvPolicy::Quest { page: 16, top: 14 };
    for c in cases() {
        let out = answer(KvDtype::F16.into(), quest, &c);
        assert!(eval::correct(&c, &out), "key {} got {out:?}", c.answer);
    }
}

#[test]
fn sink_window_misses_a_key_outside_its_window() {
    let ring = KvPolicy::SinkWindow {
        sink: 4,
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
