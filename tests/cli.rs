//! The `lottery` binary end to end: the README's main job and clear errors
//! for bad input (exit code 1 and a message, never a panic).

mod common;
use std::process::Command;

fn lottery() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lottery"));
    c.env("LOTTERY_MODEL", common::model_path());
    c
}

#[test]
fn run_json_prints_the_reference_greedy_ids() {
    let out = lottery()
        .args([
            "run",
            "--prompt",
            "The capital of France is",
            "-n",
            "8",
            "--temperature",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lottery run failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        common::ids(&v["prompt_ids"]),
        vec![504, 3575, 282, 4649, 314]
    );
    assert_eq!(
        common::ids(&v["ids"]),
        vec![7042, 30, 198, 198, 504, 2988, 314, 42]
    );
    assert_eq!(v["text"], " Paris.\n\nThe answer is:");
    assert!(v["timings"]["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
}

fn expect_error(args: &[&str], model: &std::path::Path, needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_lottery"))
        .env("LOTTERY_MODEL", model)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: expected exit 1, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected `{needle}` in: {stderr}"
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("lottery-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    expect_error(
        &["run", "--prompt", "hi"],
        &dir.join("missing.gguf"),
        "missing.gguf",
    );
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    expect_error(&["run", "--prompt", "hi"], &bad, "offset");
    std::fs::write(&bad, b"not a model at all").unwrap();
    expect_error(&["info", bad.to_str().unwrap()], &bad, "magic");
    expect_error(
        &["run", "--prompt", "hi", "--ctx", "1"],
        &common::model_path(),
        "context",
    );
    expect_error(
        &["run", "--prompt", "hi", "--top-p", "0"],
        &common::model_path(),
        "top-p",
    );
}
