//! Constrained decoding: the GPU sampler keeps only the ids a grammar allows
//! (llguidance's masks), on a tiny random model (where free decoding is
//! noise) and on the real model with a tool-call JSON Schema.

mod common;
use lottery::engine::{Gpu, GpuOptions, WeightFormat};
use lottery::models::constrain::Grammar;
use lottery::models::{HookAction, Model, SamplerSettings, StopReason};
use lottery::{GenerateOptions, Session, SessionOptions};
use std::sync::Arc;

fn tiny() -> Arc<Model> {
    let dir = std::env::temp_dir().join(format!("lottery-constrain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    common::tiny_gguf("llama", WeightFormat::Q8_0, &|_| true)
        .write_file(&path)
        .unwrap();
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| panic!("{e}")));
    Arc::new(Model::load(gpu, &path, &mut |_, _| {}).unwrap())
}

fn tiny_session(model: &Arc<Model>) -> Session {
    Session::new(
        model.clone(),
        SessionOptions {
            ctx: 64,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Free-running decoding (no end at EOS) at `temperature`.
fn sampled(max_tokens: usize, temperature: f32, seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        stop_at_eos: false,
        sampler: SamplerSettings {
            temperature,
            seed,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The runtime's reader may write numbers only as its sources spell them:
/// every run of digits a random model writes under that grammar is one of
/// the sources' numbers (two never run together), though a tenth of the
/// tiny vocabulary is digits.
#[test]
fn the_reader_writes_only_numbers_its_sources_hold() {
    let model = tiny();
    let mut s = tiny_session(&model);
    let pattern = lottery::models::runtime::solve::reader_pattern("built in 1618, 214 m; 7");
    let nums = ["1618", "214", "7"];
    let made_of = |run: &str, nums: &[&str]| run.is_empty() || nums.contains(&run);
    let mut digits = 0;
    for seed in 0..6 {
        let mut c = model.constraint(&Grammar::Regex(pattern.clone())).unwrap();
        s.rewind(0).unwrap();
        let opts = sampled(40, 1.5, seed);
        let g = s
            .generate_constrained(&[5, 9, 2], &opts, &mut c, |_| HookAction::Continue)
            .unwrap();
        // A run the token budget cut off may end in part of a number.
        let closed = g
            .text
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string();
        for run in closed.split(|c: char| !c.is_ascii_digit()) {
            assert!(made_of(run, &nums), "{run:?} in {:?}", g.text);
            digits += run.len();
        }
    }
    assert!(digits > 0, "the numbers stay allowed");
    assert_eq!(
        lottery::models::runtime::solve::reader_pattern("no numbers here"),
        r" ?[^\s][^\n]{0,200}\n?"
    );
}

/// A random model's output matches the regex under the mask, greedy and
/// sampled, and the generation ends because the grammar is complete.
#[test]
fn a_random_model_spells_what_the_regex_allows() {
    let model = tiny();
    let mut s = tiny_session(&model);
    // The tiny vocabulary is one character per id, '!' (33) to 'H' (72).
    let re = "[A-E]{3}(!|#)[0-9]{2}";
    let check = |t: &str| {
        let b = t.as_bytes();
        assert_eq!(b.len(), 6, "{t:?}");
        assert!(b[..3].iter().all(|c| (b'A'..=b'E').contains(c)), "{t:?}");
        assert!(b[3] == b'!' || b[3] == b'#', "{t:?}");
        assert!(b[4..].iter().all(|c| c.is_ascii_digit()), "{t:?}");
    };
    for temperature in [0.0, 1.5] {
        for seed in 0..3 {
            let mut c = model.constraint(&Grammar::Regex(re.into())).unwrap();
            s.rewind(0).unwrap();
            let opts = sampled(20, temperature, seed);
            let g = s
                .generate_constrained(&[5, 9, 2], &opts, &mut c, |_| HookAction::Continue)
                .unwrap();
            check(&g.text);
            assert_eq!(g.stop, StopReason::Grammar);
            assert_eq!(c.masks, 6, "a mask per sampled token");
        }
    }
    // Free decoding afterwards is free again (the mask is off).
    s.rewind(0).unwrap();
    let free = s
        .generate(
            &[5, 9, 2],
            &GenerateOptions {
                max_tokens: 12,
                stop_at_eos: false,
                ..Default::default()
            },
            |_, _| true,
        )
        .unwrap();
    assert_eq!(free.ids.len(), 12);
}

#[test]
fn a_broken_grammar_is_a_clear_error() {
    let model = tiny();
    let e = model
        .constraint(&Grammar::Regex("(ab".into()))
        .err()
        .expect("an unclosed group must not compile");
    assert!(e.to_string().contains("regex"), "{e}");
    let e = model
        .constraint(&Grammar::JsonSchema(
            serde_json::json!({"type": "no-such-type"}),
        ))
        .err()
        .expect("an unknown JSON type must not compile");
    assert!(e.to_string().contains("JSON schema"), "{e}");
}

/// The issue's check: 20 sampled generations for a tool-call schema on the
/// real model, every one a JSON value of the schema; the mask cost per token
/// is printed (BENCHMARKS.md records it).
#[test]
fn real_model_tool_calls_follow_the_schema() {
    let model = common::load_model();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "tool": {"enum": ["calculator", "search", "memory"]},
            "arguments": {
                "type": "object",
                "properties": {"input": {"type": "string", "maxLength": 24}},
                "required": ["input"],
                "additionalProperties": false
            }
        },
        "required": ["tool", "arguments"],
        "additionalProperties": false
    });
    let mut s = Session::new(
        model.clone(),
        SessionOptions {
            ctx: 256,
            ..Default::default()
        },
    )
    .unwrap();
    let prompt = model
        .tokenizer
        .encode(
            "<|im_start|>user\nWhat is 17 times 23? Answer with a tool call as JSON.<|im_end|>\n\
             <|im_start|>assistant\n",
        )
        .unwrap();
    let (mut secs, mut masks) = (0.0, 0);
    let mut distinct = std::collections::BTreeSet::new();
    // Eight samples: each is a full constrained generation (up to 80
    // tokens with a mask upload each); twenty were two minutes of CI.
    const SEEDS: u64 = 8;
    for seed in 0..SEEDS {
        let mut c = model
            .constraint(&Grammar::JsonSchema(schema.clone()))
            .unwrap();
        s.rewind(0).unwrap();
        let opts = GenerateOptions {
            max_tokens: 80,
            sampler: SamplerSettings {
                temperature: 0.9,
                seed,
                ..Default::default()
            },
            ..Default::default()
        };
        let g = s
            .generate_constrained(&prompt, &opts, &mut c, |_| HookAction::Continue)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&g.text)
            .unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {:?}", g.text));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 2, "{v}");
        assert!(
            ["calculator", "search", "memory"].contains(&o["tool"].as_str().unwrap()),
            "{v}"
        );
        let args = o["arguments"].as_object().unwrap();
        assert_eq!(args.len(), 1, "{v}");
        assert!(args["input"].as_str().unwrap().chars().count() <= 24, "{v}");
        secs += c.mask_s;
        masks += c.masks;
        distinct.insert(g.text);
    }
    assert!(
        distinct.len() > 1,
        "sampling with {SEEDS} seeds gave one output"
    );
    eprintln!(
        "{SEEDS}/{SEEDS} valid; {} masks, {:.0} us a mask on average",
        masks,
        1e6 * secs / masks as f64
    );
}
