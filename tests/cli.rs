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

/// `lottery chat --tools`: each message goes through the runtime's loop;
/// the call is shown as it happens and the answer is the tool's exact value.
#[test]
fn chat_with_tools_calls_the_calculator() {
    use std::io::Write;
    let mut child = lottery()
        .args(["chat", "--tools", "calculator,memory", "--ctx", "1024"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is 347 times 29?\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lottery chat failed: {stderr}");
    assert!(stderr.contains("[calculator"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("10063"), "{stdout}\n{stderr}");
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

/// `lottery quantize` to Q8_0 and Q4_K: the files read back with the expected
/// tensor types (Q4_K falls back to Q5_0 for SmolLM2's 576-wide rows, as
/// llama.cpp does) and generate the reference's first greedy tokens.
#[test]
fn quantize_outputs_load_and_generate() {
    let dir = std::env::temp_dir().join(format!("lottery-quant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (ty, expect) in [
        ("q8_0", vec![("q8_0", 211)]),
        ("q4_k", vec![("q4_k", 30), ("q5_0", 180), ("q8_0", 1)]),
    ] {
        let out = dir.join(format!("smol-{ty}.gguf"));
        let o = lottery()
            .args([
                "quantize",
                "--in",
                common::model_path().to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--type",
                ty,
                "--override",
                "token_embd=q8_0",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "quantize {ty}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let g = lottery::models::load::GgufFile::open(&out).unwrap();
        for (name, n) in expect {
            let got = g
                .tensors()
                .iter()
                .filter(|t| t.ggml_type.name().eq_ignore_ascii_case(name))
                .count();
            assert_eq!(got, n, "{ty}: tensors of type {name}");
        }
        let o = lottery()
            .args([
                "run",
                "--model",
                out.to_str().unwrap(),
                "--prompt",
                "The capital of France is",
                "-n",
                "4",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "run {ty}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(common::ids(&v["ids"]), vec![7042, 30, 198, 198], "{ty}");
        std::fs::remove_file(&out).ok();
    }
}

#[test]
fn embed_json_index_and_search_end_to_end() {
    let g = common::minilm_golden();
    let s = &g["sentences"][0];
    let run = |args: &[&str]| {
        let out = lottery()
            .env("LOTTERY_EMBED_MODEL", common::minilm_dir())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, stdout, stderr) = run(&["embed", "--text", s["text"].as_str().unwrap(), "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["tokens"], s["n_tokens"]);
    let (got, want) = (
        v["embedding"].as_array().unwrap(),
        s["embedding"].as_array().unwrap(),
    );
    assert_eq!(got.len(), 384);
    for (a, b) in got.iter().zip(want) {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4);
    }
    let dir = std::env::temp_dir().join(format!("lottery-cli-kb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    std::fs::write(
        dir.join("docs/a.md"),
        "# Rivers\n\nThe Danube flows through ten countries into the Black Sea.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("docs/b.txt"),
        "Mitochondria produce most of the chemical energy a cell needs.\n",
    )
    .unwrap();
    let kb = dir.join("kb");
    let (kb_s, docs_s) = (kb.to_str().unwrap(), dir.join("docs"));
    let (ok, stdout, stderr) = run(&["index", "--quiet", "--out", kb_s, docs_s.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 new file(s)"), "{stdout}");
    let (ok, stdout, stderr) = run(&[
        "search",
        "--kb",
        kb_s,
        "-k",
        "1",
        "--json",
        "which river ends in the Black Sea",
    ]);
    assert!(ok, "{stderr}");
    let hit: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(hit["source"].as_str().unwrap().ends_with("a.md"), "{hit}");
    assert_eq!(hit["rank"], 1);
    // Bad input: exit 1 with a message, never a panic.
    for (args, needle) in [
        (vec!["embed", "--text", "   "], "empty"),
        (vec!["search", "--kb", "/nonexistent/kb", "q"], "kb.json"),
        (
            vec!["embed", "--model", "/nonexistent/model", "--text", "x"],
            "not a model directory",
        ),
    ] {
        let (ok, _, stderr) = run(&args);
        assert!(
            !ok && stderr.contains(needle) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `lottery prune` on the real model, then `info` and `run` on the result:
/// the sparse file lists its pattern and bits per weight and generates.
#[test]
fn prune_info_run_round_trip() {
    let dir = std::env::temp_dir().join(format!("lottery-cli-prune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_path = dir.join("pruned.gguf");
    let out = lottery()
        .args(["prune", "--in"])
        .arg(common::model_path())
        .arg("--out")
        .arg(&out_path)
        .args([
            "--method",
            "magnitude",
            "--pattern",
            "2:4",
            "--values",
            "q4_0",
            "--skip",
            "blk.0.",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "prune failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 29 layers of 7 projections; 2:4 over q4_0 is 1 bit of mask + 2.25 of values.
    assert!(
        stdout.contains("pruned 203 weights (2:4, q4_0 values, magnitude): 3.250 bits per weight"),
        "{stdout}"
    );
    let info = lottery().arg("info").arg(&out_path).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("sparse weights (203)"), "{info}");
    assert!(
        info.lines().any(|l| l.contains("blk.1.ffn_down.weight")
            && l.contains("2:4")
            && l.contains("q4_0")
            && l.contains("50.0%")),
        "{info}"
    );
    let out = lottery()
        .args(["run", "--model"])
        .arg(&out_path)
        .args([
            "--prompt",
            "The capital of France is",
            "-n",
            "6",
            "--temperature",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(common::ids(&v["ids"]).len(), 6, "{v}");
    // Wanda without calibration text is refused with the reason.
    let out = lottery()
        .args(["prune", "--in"])
        .arg(common::model_path())
        .arg("--out")
        .arg(dir.join("x.gguf"))
        .args(["--method", "wanda", "--sparsity", "0.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --calibration"));
    // SparseGPT pruning and quantizing one layer in one pass (its default
    // with block values), on a little calibration text; the file generates.
    // --round-after is SparseGPT's only.
    let calib = dir.join("calib.txt");
    std::fs::write(
        &calib,
        "The river rises in the hills and reaches the sea after two hundred miles. \
         Farmers along its banks grow wheat, barley and beans, and the town at its \
         mouth has traded in salt and timber for six hundred years.",
    )
    .unwrap();
    let joint_path = dir.join("joint.gguf");
    let skips: Vec<String> = (0..30)
        .filter(|l| *l != 3)
        .flat_map(|l| ["--skip".to_string(), format!("blk.{l}.")])
        .collect();
    let out = lottery()
        .args(["prune", "--in"])
        .arg(common::model_path())
        .arg("--out")
        .arg(&joint_path)
        .args(["--method", "sparsegpt", "--pattern", "4:8"])
        .args(["--values", "q4_1", "--calib-tokens", "48", "--calibration"])
        .arg(&calib)
        .args(&skips)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "joint prune failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pruned 7 weights (4:8, q4_1 values, sparsegpt, joint)"),
        "{stdout}"
    );
    let out = lottery()
        .args(["run", "--model"])
        .arg(&joint_path)
        .args([
            "--prompt",
            "The river",
            "-n",
            "4",
            "--temperature",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lottery()
        .args(["prune", "--in"])
        .arg(common::model_path())
        .arg("--out")
        .arg(dir.join("y.gguf"))
        .args([
            "--method",
            "magnitude",
            "--round-after",
            "--sparsity",
            "0.5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--round-after is SparseGPT's"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
