//! Hostile model files. The regression corpus: every input the fuzzers
//! (`scripts/fuzz.sh`) found crashing, hanging or allocating without bound,
//! and the hostile inputs found by hand, replayed through the same code as
//! the fuzz targets (`fuzz/src/lib.rs`); each must now give the named error
//! listed in `tests/hostile/expected.json`. The fuzzers' seeds are replayed
//! too. Then a hostile chat template through the CLI, as a user meets it.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod pipelines;

mod common;

use arbitrary::{Arbitrary, Unstructured};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(target: &str, data: &[u8], scratch: &Path) -> Vec<String> {
    match target {
        "gguf" => pipelines::gguf(data),
        "hf_dir" => pipelines::hf_dir(data, scratch),
        "tokenizer" => {
            let input = pipelines::TokInput::arbitrary_take_rest(Unstructured::new(data))
                .expect("libFuzzer hands the same bytes to arbitrary");
            pipelines::tokenizer(&input)
        }
        "chat_template" => pipelines::chat_template(data),
        "tensor_decode" => pipelines::tensor_decode(data),
        "tool_call" => pipelines::tool_call(data),
        other => panic!("unknown fuzz target folder {other}"),
    }
}

fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for target in std::fs::read_dir(dir).unwrap() {
        let target = target.unwrap().path();
        if !target.is_dir() {
            continue;
        }
        let name = target.file_name().unwrap().to_str().unwrap().to_string();
        for f in std::fs::read_dir(&target).unwrap() {
            out.push((name.clone(), f.unwrap().path()));
        }
    }
    out.sort();
    out
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lottery-hostile-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn regression_corpus_gives_the_named_errors() {
    let dir = common::repo().join("tests/hostile");
    let expected: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let tmp = scratch("corpus");
    let mut seen = 0;
    for (target, path) in files(&dir) {
        let key = format!("{target}/{}", path.file_name().unwrap().to_str().unwrap());
        let want = expected.get(&key).unwrap_or_else(|| {
            panic!("{key} has no expected error in tests/hostile/expected.json")
        });
        let errs = run(&target, &std::fs::read(&path).unwrap(), &tmp);
        assert!(
            errs.iter().any(|e| e.contains(want.as_str())),
            "{key}: expected an error containing {want:?}, got {errs:#?}"
        );
        seen += 1;
    }
    assert_eq!(
        seen,
        expected.len(),
        "expected.json lists files that are not there"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn fuzz_seeds_replay_without_panics() {
    let dir = common::repo().join("fuzz/seeds");
    let tmp = scratch("seeds");
    let mut n = 0;
    for (target, path) in files(&dir) {
        let errs = run(&target, &std::fs::read(&path).unwrap(), &tmp);
        // The seeds are valid files: the tiny model is read all the way.
        if path.to_str().unwrap().contains("tiny-") {
            assert!(errs.is_empty(), "{}: {errs:#?}", path.display());
        }
        n += 1;
    }
    assert!(n >= 30, "expected the seeds of every target, found {n}");
    std::fs::remove_dir_all(&tmp).ok();
}

/// A model file whose chat template loops 10^10 times: `lottery run --chat`
/// reports the template's limit instead of spinning.
#[test]
fn cli_refuses_a_runaway_chat_template() {
    use lottery_models::load::MetaValue;
    let mut w = common::tiny_gguf(
        "llama",
        lottery::engine::formats::WeightFormat::Q8_0,
        &|_| true,
    );
    w.add_metadata(
        "tokenizer.chat_template",
        MetaValue::String(
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}".into(),
        ),
    )
    .unwrap();
    let tmp = scratch("cli");
    let path = tmp.join("runaway-template.gguf");
    std::fs::write(&path, w.to_bytes()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lottery"))
        .args(["run", "--chat", "-n", "2", "--prompt", "hi", "--model"])
        .arg(&path)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("tokenizer.chat_template") && err.contains("fuel limit"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}
