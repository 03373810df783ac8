//! The inline calculator on the real model, with the arithmetic protocol of
//! ../shared/CAPABILITY.md (GSM8K annotations, three worked examples of the
//! same kind, stop at the first newline, 40 model tokens): seeded cases of
//! 3-digit addition and multiplication. The reference model gets 24/25 and
//! 25/25 with the calculator, 2/25 and 0/25 without.

mod common;
use lottery::engine::reference::Rng;
use lottery::models::runtime::{inline_calculator, InlineCall};
use lottery::{GenerateOptions, Session, SessionOptions};

fn num(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.next_u64() % (hi - lo + 1)
}

fn prompt(op: char, examples: &[(u64, u64)], q: (u64, u64), annotated: bool) -> String {
    let val = |a: u64, b: u64| if op == '+' { a + b } else { a * b };
    let mut s = String::new();
    for &(a, b) in examples {
        let v = val(a, b);
        let ans = if annotated {
            format!("<<{a}{op}{b}={v}>>{v}")
        } else {
            v.to_string()
        };
        s.push_str(&format!("Q: What is {a} {op} {b}?\nA: {ans}\n\n"));
    }
    s.push_str(&format!("Q: What is {} {op} {}?\nA:", q.0, q.1));
    s
}

/// The first number after the first `>>` (annotated) or the first number.
fn score(text: &str, annotated: bool) -> Option<u64> {
    let t = if annotated {
        &text[text.find(">>")? + 2..]
    } else {
        text
    };
    let digits: String = t
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[test]
fn inline_calculator_closes_the_arithmetic_gap() {
    let model = common::load_model();
    let mut session = Session::new(
        model.clone(),
        SessionOptions {
            ctx: 512,
            ..Default::default()
        },
    )
    .unwrap();
    let opts = GenerateOptions {
        max_tokens: 40,
        stop: vec!["\n".into()],
        ..Default::default()
    };
    for (op, seed) in [('+', 11u64), ('*', 12)] {
        let mut rng = Rng::new(seed);
        let examples: Vec<(u64, u64)> = (0..3)
            .map(|_| (num(&mut rng, 100, 999), num(&mut rng, 100, 999)))
            .collect();
        let (mut with_tool, mut without) = (0, 0);
        let cases = 5;
        for _ in 0..cases {
            let (a, b) = (num(&mut rng, 100, 999), num(&mut rng, 100, 999));
            let want = if op == '+' { a + b } else { a * b };
            let p = model
                .tokenizer
                .encode(&prompt(op, &examples, (a, b), true))
                .unwrap();
            // The few-shot examples stay in the cache between cases.
            let kept = session.rewind_to_prefix(&p).unwrap();
            let mut calls: Vec<InlineCall> = Vec::new();
            let g = session
                .generate_with_hook(&p[kept..], &opts, inline_calculator(&mut calls, |_| true))
                .unwrap();
            let ok = score(&g.text, true) == Some(want);
            let tool_text = g.text.clone();
            with_tool += ok as usize;
            // Every value the runtime inserted is exact.
            for c in &calls {
                let v = lottery::models::runtime::calculator::evaluate(&c.expression).unwrap();
                assert_eq!(c.result.as_deref(), Ok(v.to_string().as_str()));
            }
            assert!(g.ids.len() - g.injected <= 40);
            let kept = session.rewind_to_prefix(&p).unwrap();
            let g = session.generate(&p[kept..], &opts, |_, _| true).unwrap();
            without += (score(&g.text, true) == Some(want)) as usize;
            eprintln!(
                "{a} {op} {b} = {want}: with the calculator {tool_text:?} ({ok}); alone {:?}",
                g.text
            );
        }
        eprintln!("{op}: {with_tool}/{cases} with the calculator, {without}/{cases} without");
        assert!(
            with_tool >= cases - 1,
            "{op}: only {with_tool}/{cases} with the calculator"
        );
        assert!(
            with_tool > without || op == '+',
            "{op}: the tool did not help"
        );
    }
}
