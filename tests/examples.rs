//! The examples a developer copies from build (cargo builds them for the
//! tests) and run: each briefly, on the real models.

mod common;
use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> Command {
    // target/<profile>/deps/this-test -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe.parent().unwrap().parent().unwrap().join("examples");
    let mut c = Command::new(dir.join(name));
    c.env("LOTTERY_MODEL", common::model_path())
        .env("LOTTERY_EMBED_MODEL", common::minilm_dir());
    c
}

fn run(c: Command) -> String {
    run2(c).0
}

fn run2(mut c: Command) -> (String, String) {
    let out = c.output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{o}\n{e}");
    (o, e)
}

#[test]
fn generate_chat_and_knowledge_base_examples_run() {
    let mut c = example("generate");
    c.args(["The capital of France is", "6"]);
    assert!(run(c).starts_with("The capital of France is"));
    let mut c = example("chat");
    c.args(["What is the capital of France?"]);
    let o = run(c);
    assert!(
        o.contains("> What is the capital of France?") && o.contains("Paris"),
        "{o}"
    );
    let dir = std::env::temp_dir().join(format!("lottery-example-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("zorblat.md"),
        "The Zorblat 9 router is reset by holding its blue button for twelve seconds.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("garden.txt"),
        "Tomatoes need water every morning and full sun.\n",
    )
    .unwrap();
    let mut c = example("knowledge_base");
    c.arg(&dir).arg("How do I reset the Zorblat 9 router?");
    let (answer, log) = run2(c);
    // The right passage is retrieved first, and the answer uses it.
    let first = log.lines().find(|l| l.starts_with("[1]")).unwrap_or("");
    assert!(first.contains("zorblat.md"), "{log}");
    assert!(
        ["twelve", "12", "blue"].iter().any(|w| answer.contains(w)),
        "{answer}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A user-defined tool through the loop: the model calls it (the tool says
/// the task names one of its items) and answers with its number.
#[test]
fn custom_tool_example_runs() {
    let mut c = example("custom_tool");
    c.arg("How many pine tables are in stock?");
    let (answer, log) = run2(c);
    assert!(
        log.lines().any(|l| l.starts_with("[call]")
            && l.contains("inventory")
            && l.contains("12 pine tables")),
        "{log}"
    );
    assert!(answer.contains("12"), "{answer}\n{log}");
}
