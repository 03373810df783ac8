//! `lottery eval --quick` end to end on the real model: a few short cells,
//! the per-case JSONL, resuming, and the report. The saturated cells are
//! checked for their answers (a miss there is a bug, CAPABILITY.md): passkey
//! at 256 tokens, and 2-digit multiplication with the calculator.

use std::process::Command;

fn lottery() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lottery"));
    c.env(
        "XDG_RUNTIME_DIR",
        std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp/lottery-xdg".into()),
    );
    c
}

/// `lottery eval ARGS --out DIR`, which must succeed; its output.
fn eval_into(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    let out = lottery()
        .arg("eval")
        .args(args)
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn quick_eval_writes_resumes_and_reports() {
    let dir = std::env::temp_dir().join(format!("lottery-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        let out = eval_into(
            &[
                "--quick",
                "--tasks",
                "passkey,arithmetic,copy",
                "--lengths",
                "256,mul2,copy",
                "--tools",
                "calculator",
                "--json",
            ],
            &dir,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v
    };
    let first = run();
    let cell = |v: &serde_json::Value, t: &str, l: &str| -> (u64, u64) {
        let c = v["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["task"] == t && c["length"] == l)
            .unwrap_or_else(|| panic!("no cell {t} {l} in {v}"));
        (c["correct"].as_u64().unwrap(), c["cases"].as_u64().unwrap())
    };
    assert_eq!(cell(&first, "passkey", "256"), (2, 2));
    assert_eq!(cell(&first, "arithmetic", "mul2 annotated"), (2, 2));
    assert_eq!(cell(&first, "arithmetic", "mul2 plain").1, 2);
    assert_eq!(cell(&first, "copy", "copy 8").1, 2);
    let lines = std::fs::read_to_string(dir.join("cases.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 10, "{lines}");
    // The calculator answered the annotated cases.
    assert!(
        lines.lines().any(|l| l.contains("\"tool_calls\":[\"")),
        "{lines}"
    );
    // Resumed: nothing reruns, the same cells come back.
    let second = run();
    assert_eq!(
        std::fs::read_to_string(dir.join("cases.jsonl")).unwrap(),
        lines
    );
    assert_eq!(first["cells"], second["cells"]);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains(", kv f16, full, tools calculator |"), "{md}");
    assert!(md.contains("passkey 256"), "{md}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["rows"].as_array().unwrap().len(), 1);
    // The chart: one line (and legend entry) per task, linked from
    // the report.
    let svg = std::fs::read_to_string(dir.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(
        svg.contains("\npasskey\n") && svg.contains("bits per weight"),
        "{svg}"
    );
    assert!(md.contains("(chart.svg)"), "{md}");
}

/// Knowledge-base QA through the runtime's loop: the base is written and
/// indexed from the seed, the model must search it before answering (the
/// base holds the entity the question names), and the trace is kept.
#[test]
fn solve_mode_searches_the_knowledge_base() {
    let dir = std::env::temp_dir().join(format!("lottery-eval-solve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = eval_into(
        &[
            "--solve", "--tools", "search", "--tasks", "kb_qa", "--cases", "1", "--json",
        ],
        &dir,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["solve"], true);
    assert!(v["config"].as_str().unwrap().contains("tools loop+search"));
    assert!(dir.join("kb_qa-seed-0/kb/kb.json").exists());
    let case: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("cases.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let trace = case["trace"].as_array().unwrap();
    assert_eq!(trace[0]["kind"], "call", "{case}");
    assert_eq!(trace[0]["tool"], "search", "{case}");
    // The loop's tools need --solve.
    let out = lottery()
        .args(["eval", "--tools", "search", "--tasks", "kb_qa", "--quick"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--solve"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Tool choice through the loop: one question of each kind; the arithmetic
/// one is computed by the calculator (the task spells out an operation),
/// and the report scores the calls against each bucket's tool.
#[test]
fn tool_choice_scores_the_calls() {
    let dir = std::env::temp_dir().join(format!("lottery-eval-choice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    eval_into(
        &[
            "--solve",
            "--tools",
            "calculator,search",
            "--tasks",
            "tool_choice",
            "--cases",
            "1",
        ],
        &dir,
    );
    let cases: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("cases.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cases.len(), 3);
    let calc = cases.iter().find(|c| c["length"] == "calculator").unwrap();
    assert_eq!(calc["trace"][0]["tool"], "calculator", "{calc}");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("precision"), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--grid`: two configurations from a TOML file into one directory, each a
/// row of the report; a bad row is refused, naming it, before anything runs.
#[test]
fn grid_runs_each_configuration() {
    let dir = std::env::temp_dir().join(format!("lottery-eval-grid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let grid = dir.join("grid.toml");
    std::fs::write(
        &grid,
        "[defaults]\ntasks = [\"copy\"]\nlengths = [\"copy\"]\ncases = 1\n\n\
         [[config]]\n\n[[config]]\nkv = \"q8_0\"\n",
    )
    .unwrap();
    let out = dir.join("out");
    eval_into(&["--grid", grid.to_str().unwrap()], &out);
    let configs = std::fs::read_to_string(out.join("configs.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = configs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{configs}");
    assert_eq!(rows[0]["kv"], "f16");
    assert_eq!(rows[1]["kv"], "q8_0");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("kv q8_0"), "{report}");
    for (bad, says) in [
        ("[[config]]\nkv = \"q3_0\"\n", "[[config]] 1 of 1"),
        ("[[config]]\n[[config]]\nkv_polcy = \"full\"\n", "kv_polcy"),
        ("[[config]]\nmodel = \"no/such.gguf\"\n", "does not exist"),
    ] {
        std::fs::write(&grid, bad).unwrap();
        let o = lottery()
            .args(["eval", "--grid", grid.to_str().unwrap(), "--out"])
            .arg(dir.join("bad"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{bad}: {err}");
        assert!(!dir.join("bad").join("cases.jsonl").exists());
    }
}

/// `--export-cases`: the case set as JSONL with no model loaded (the model
/// path does not exist), each line's answer the one its prompt asks for,
/// the same file for the same seed and another for another seed.
#[test]
fn export_cases_writes_the_case_set_without_a_model() {
    let dir = std::env::temp_dir().join(format!("lottery-eval-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let export = |seed: &str, name: &str| {
        let path = dir.join(name);
        let o = lottery()
            .args(["eval", "--model", "no/such.gguf", "--tasks", "arithmetic"])
            .args([
                "--lengths",
                "add2",
                "--cases",
                "3",
                "--seed",
                seed,
                "--export-cases",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(path).unwrap()
    };
    let a = export("4", "a.jsonl");
    assert_eq!(a, export("4", "b.jsonl"));
    assert_ne!(a, export("5", "c.jsonl"));
    let rows: Vec<serde_json::Value> = a
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6, "{a}");
    for r in &rows {
        let p = r["prompt"].as_str().unwrap();
        let q = &p[p.rfind("Q: What is ").unwrap() + 11..p.rfind("?\nA:").unwrap()];
        let sum: u64 = q.split(" + ").map(|t| t.parse::<u64>().unwrap()).sum();
        assert_eq!(r["answer"], sum.to_string(), "{r}");
        assert_eq!(r["seed"], 4);
        assert_eq!(r["stop"], "\n");
        let annotated = r["length"].as_str().unwrap().ends_with("annotated");
        assert_eq!(p.contains("<<"), annotated, "{r}");
        assert_eq!(
            r["scoring"],
            if annotated {
                "DigitsAfterCall"
            } else {
                "FirstDigits"
            }
        );
        assert_eq!(r["max_tokens"], if annotated { 40 } else { 16 });
    }
}
