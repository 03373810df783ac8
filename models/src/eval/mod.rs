//! Capability tasks of ../shared/CAPABILITY.md as deterministic generators
//! (a seed gives the same prompts) and their scoring rules. No threads and no
//! file system here: the CLI (`lottery eval`) runs them and writes reports.
//!
//! Implemented so far: passkey and KV retrieval (the long-context retrieval
//! tasks the KV-cache settings must keep).

use lottery_engine::reference::Rng;

/// One generated case.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub task: &'static str,
    /// Length bucket, e.g. "1024" (approximate prompt tokens).
    pub length: String,
    pub trial: usize,
    pub prompt: String,
    /// The expected answer (digits).
    pub answer: String,
    /// Greedy tokens to generate.
    pub max_tokens: usize,
}

const PASSKEY_TASK: &str = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there.";
const PASSKEY_FILLER: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

/// Filler repetitions per passkey length (the protocol's table).
pub const PASSKEY_LENGTHS: [(usize, usize); 4] = [(256, 8), (512, 18), (1024, 40), (1800, 72)];
/// JSON pairs per KV-retrieval length.
pub const KV_LENGTHS: [(usize, usize); 3] = [(300, 5), (600, 12), (1200, 26)];

/// Trial t of n sweeps position round(t / (n - 1) * span).
fn sweep(t: usize, n: usize, span: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    ((t as f64 / (n - 1) as f64) * span as f64).round() as usize
}

/// Passkey cases at the length bucket `length` (one of [`PASSKEY_LENGTHS`]).
pub fn passkey(length: usize, cases: usize, seed: u64) -> Option<Vec<Case>> {
    let &(_, n) = PASSKEY_LENGTHS.iter().find(|(l, _)| *l == length)?;
    let mut rng = Rng::new(seed ^ 0x9a55_0000 ^ length as u64);
    Some(
        (0..cases)
            .map(|t| {
                let key = 10_000 + rng.next_u64() % 90_000;
                let k = sweep(t, cases, n);
                let prompt = [
                    PASSKEY_TASK.to_string(),
                    vec![PASSKEY_FILLER; k].join(" "),
                    format!("The pass key is {key}. Remember it. {key} is the pass key."),
                    vec![PASSKEY_FILLER; n - k].join(" "),
                    "What is the pass key? The pass key is".to_string(),
                ]
                .join("\n");
                Case {
                    task: "passkey",
                    length: length.to_string(),
                    trial: t,
                    prompt,
                    answer: key.to_string(),
                    max_tokens: 12,
                }
            })
            .collect(),
    )
}

/// A random UUID4 string from `rng`.
fn uuid4(rng: &mut Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0xc << 60)) | (0x8 << 60); // variant 10xx
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// KV-retrieval cases at the length bucket `length` (one of [`KV_LENGTHS`]).
pub fn kv_retrieval(length: usize, cases: usize, seed: u64) -> Option<Vec<Case>> {
    let &(_, pairs) = KV_LENGTHS.iter().find(|(l, _)| *l == length)?;
    let mut rng = Rng::new(seed ^ 0x4b56_0000 ^ length as u64);
    Some(
        (0..cases)
            .map(|t| {
                let mut values: Vec<u64> = Vec::with_capacity(pairs);
                while values.len() < pairs {
                    let v = 100_000 + rng.next_u64() % 900_000;
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
                let keys: Vec<String> = (0..pairs).map(|_| uuid4(&mut rng)).collect();
                let json = keys
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| format!("\"{k}\": {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let i = sweep(t, cases, pairs - 1);
                Case {
                    task: "kv_retrieval",
                    length: length.to_string(),
                    trial: t,
                    prompt: format!(
                        "Extract the value corresponding to the specified key in the JSON object below.\n\n{{{json}}}\n\nQuestion: What is the value of key \"{}\"?\nAnswer:",
                        keys[i]
                    ),
                    answer: values[i].to_string(),
                    max_tokens: 12,
                }
            })
            .collect(),
    )
}

/// The first run of ASCII digits in `text` (the retrieval tasks' scoring).
pub fn first_digit_run(text: &str) -> Option<&str> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Whether a generation answers the case.
pub fn correct(case: &Case, output: &str) -> bool {
    first_digit_run(output) == Some(case.answer.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passkey_follows_the_protocol() {
        let c = passkey(256, 20, 1).unwrap();
        assert_eq!(c.len(), 20);
        assert_eq!(c, passkey(256, 20, 1).unwrap(), "deterministic per seed");
        assert_ne!(c[0].answer, passkey(256, 20, 2).unwrap()[0].answer);
        let lines: Vec<&str> = c[0].prompt.split('\n').collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], PASSKEY_TASK);
        assert_eq!(lines[1], "", "depth 0: no filler before the key");
        assert_eq!(
            lines[2],
            format!(
                "The pass key is {0}. Remember it. {0} is the pass key.",
                c[0].answer
            )
        );
        assert_eq!(lines[3].matches("There and back again.").count(), 8);
        assert_eq!(lines[4], "What is the pass key? The pass key is");
        // The last trial puts the key after all n repetitions.
        let last: Vec<&str> = c[19].prompt.split('\n').collect();
        assert_eq!(last[1].matches("Here we go.").count(), 8);
        assert_eq!(last[3], "");
        assert!(c.iter().all(|c| c.answer.len() == 5));
        assert!(passkey(300, 1, 1).is_none());
    }

    /// (key, value) pairs of a prompt's JSON line, in order.
    fn pairs(prompt: &str) -> Vec<(String, String)> {
        let json = &prompt[prompt.find('{').unwrap()..=prompt.find('}').unwrap()];
        // Valid JSON, with json.dumps spacing.
        assert!(serde_json::from_str::<serde_json::Value>(json).is_ok());
        json[1..json.len() - 1]
            .split(", ")
            .map(|kv| {
                let (k, v) = kv.split_once(": ").unwrap();
                (k.trim_matches('"').to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn kv_retrieval_follows_the_protocol() {
        let c = kv_retrieval(300, 20, 3).unwrap();
        assert_eq!(c, kv_retrieval(300, 20, 3).unwrap());
        let p = &c[0].prompt;
        assert!(p.starts_with(
            "Extract the value corresponding to the specified key in the JSON object below.\n\n{\""
        ));
        let kv = pairs(p);
        assert_eq!(kv.len(), 5);
        for (k, v) in &kv {
            assert_eq!(k.len(), 36);
            assert_eq!(&k[14..15], "4", "UUID version");
            assert!("89ab".contains(&k[19..20]), "UUID variant");
            assert_eq!(v.len(), 6);
        }
        // Trial 0 asks for the first key, the last trial for the last.
        assert!(p.ends_with(&format!(
            "}}\n\nQuestion: What is the value of key \"{}\"?\nAnswer:",
            kv[0].0
        )));
        assert_eq!(kv[0].1, c[0].answer);
        let last = pairs(&c[19].prompt);
        assert!(c[19].prompt.contains(&format!("key \"{}\"?", last[4].0)));
        assert_eq!(last[4].1, c[19].answer);
        assert_eq!(
            pairs(&kv_retrieval(1200, 1, 3).unwrap()[0].prompt).len(),
            26
        );
    }

    #[test]
    fn scoring_takes_the_first_digit_run() {
        assert_eq!(first_digit_run(" 12345. Remember"), Some("12345"));
        assert_eq!(first_digit_run("no digits"), None);
        let c = &passkey(256, 1, 5).unwrap()[0];
        assert!(correct(c, &format!(" {}.", c.answer)));
        assert!(!correct(c, &format!(" 1{}", c.answer)));
        assert!(!correct(c, "I don't know"));
    }
}
