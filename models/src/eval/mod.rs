//! Capability tasks of ../shared/CAPABILITY.md as deterministic generators
//! (a seed gives the same prompts) and their scoring rules. No threads and no
//! file system here: the CLI (`lottery eval`) runs them and writes reports.
//!
//! Implemented: passkey, KV retrieval, arithmetic (plain, annotated, and
//! annotated with the inline calculator), variable tracking, copy /
//! reverse, and knowledge-base QA over invented facts. Still to come: word
//! problems and tool choice.

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
    /// Stop where the output holds this (arithmetic and copy: a newline).
    pub stop: Option<String>,
    pub scoring: Scoring,
    /// The inline calculator may answer `<<EXPR=` (annotated arithmetic,
    /// when the run has the tool).
    pub calculator: bool,
    /// The part of `prompt` that is a document to read (the haystack, the
    /// JSON object, the text with the assignments): the runtime's loop gets
    /// it apart from the task ([`Case::task_without_document`]).
    pub document: Option<String>,
}

impl Case {
    /// The prompt with its document cut out (blank lines around it merged):
    /// the task the runtime's loop is given, the document going to it
    /// separately. The whole prompt when there is no document.
    pub fn task_without_document(&self) -> String {
        let Some(doc) = self.document.as_deref().filter(|d| !d.is_empty()) else {
            return self.prompt.clone();
        };
        let mut t = self.prompt.replacen(doc, "", 1);
        while t.contains("\n\n\n") {
            t = t.replace("\n\n\n", "\n\n");
        }
        t.trim().to_string()
    }
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
                let document = [
                    vec![PASSKEY_FILLER; k].join(" "),
                    format!("The pass key is {key}. Remember it. {key} is the pass key."),
                    vec![PASSKEY_FILLER; n - k].join(" "),
                ]
                .join("\n");
                let prompt = [
                    PASSKEY_TASK,
                    document.as_str(),
                    "What is the pass key? The pass key is",
                ]
                .join("\n");
                Case {
                    task: "passkey",
                    length: length.to_string(),
                    trial: t,
                    prompt,
                    answer: key.to_string(),
                    max_tokens: 12,
                    stop: None,
                    scoring: Scoring::FirstDigits,
                    calculator: false,
                    document: Some(document),
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
                    stop: None,
                    scoring: Scoring::FirstDigits,
                    calculator: false,
                    document: Some(format!("{{{json}}}")),
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

/// Whether `text` holds `word` as a word (letters and digits, any case):
/// "Paris." and "The capital of France is Paris" answer "Paris". The
/// cases scored so have a budget of 12 tokens, too few to list guesses
/// (the 135M model's misses name the country or nothing).
pub fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric())
        .any(|w| !w.is_empty() && w.eq_ignore_ascii_case(word))
}

/// Whether a generation answers the case, by the case's rule.
pub fn correct(case: &Case, output: &str) -> bool {
    let got = match case.scoring {
        Scoring::FirstDigits => first_digit_run(output),
        Scoring::DigitsAfterCall => output
            .find(">>")
            .and_then(|i| first_digit_run(&output[i + 2..])),
        Scoring::FirstWord => output.split_whitespace().next(),
        Scoring::Word => {
            return has_word(output, &case.answer);
        }
    };
    got == Some(case.answer.as_str())
}

/// Scores the final answer of the runtime's loop: the protocol's rule,
/// except that an answer has no `>>` marks (the loop calls tools apart from
/// the answer), so the first digit run is read instead.
pub fn correct_answer(case: &Case, answer: &str) -> bool {
    let got = match case.scoring {
        Scoring::FirstWord => answer.split_whitespace().next(),
        Scoring::Word => {
            return has_word(answer, &case.answer);
        }
        _ => first_digit_run(answer),
    };
    got == Some(case.answer.as_str())
}

/// How a case's output is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// The first run of digits equals the answer.
    FirstDigits,
    /// The first run of digits after the first `>>` (annotated arithmetic).
    DigitsAfterCall,
    /// The first whitespace-separated word equals the answer.
    FirstWord,
    /// The answer, one word, is a word of the output (any case).
    Word,
}

/// Arithmetic kinds: (name, operator, smallest, largest operand).
pub const ARITH_KINDS: [(&str, char, u64, u64); 4] = [
    ("add2", '+', 10, 99),
    ("add3", '+', 100, 999),
    ("mul2", '*', 10, 99),
    ("mul3", '*', 100, 999),
];

fn operand(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.next_u64() % (hi - lo + 1)
}

/// Arithmetic cases (GSM8K calculator format) of `kind` (add2, add3, mul2,
/// mul3), plain or annotated (`<<a*b=v>>v`): three worked examples fixed
/// per kind (the same for every seed), then the question.
pub fn arithmetic(kind: &str, annotated: bool, cases: usize, seed: u64) -> Option<Vec<Case>> {
    let ki = ARITH_KINDS.iter().position(|k| k.0 == kind)?;
    let (_, op, lo, hi) = ARITH_KINDS[ki];
    let val = |a: u64, b: u64| if op == '+' { a + b } else { a * b };
    let mut ex = Rng::new(0xe8a0_0000 + ki as u64);
    let examples: Vec<String> = (0..3)
        .map(|_| {
            let (a, b) = (operand(&mut ex, lo, hi), operand(&mut ex, lo, hi));
            let v = val(a, b);
            let ans = if annotated {
                format!("<<{a}{op}{b}={v}>>{v}")
            } else {
                v.to_string()
            };
            format!("Q: What is {a} {op} {b}?\nA: {ans}")
        })
        .collect();
    let mut rng = Rng::new(seed ^ 0xa417_0000 ^ ((ki as u64) << 8));
    Some(
        (0..cases)
            .map(|t| {
                let (a, b) = (operand(&mut rng, lo, hi), operand(&mut rng, lo, hi));
                Case {
                    task: "arithmetic",
                    length: format!("{kind} {}", if annotated { "annotated" } else { "plain" }),
                    trial: t,
                    prompt: format!("{}\n\nQ: What is {a} {op} {b}?\nA:", examples.join("\n\n")),
                    answer: val(a, b).to_string(),
                    max_tokens: if annotated { 40 } else { 16 },
                    stop: Some("\n".into()),
                    scoring: if annotated {
                        Scoring::DigitsAfterCall
                    } else {
                        Scoring::FirstDigits
                    },
                    calculator: annotated,
                    document: None,
                }
            })
            .collect(),
    )
}

/// Hops per variable-tracking chain.
pub const VAR_HOPS: [usize; 3] = [1, 3, 6];
const VAR_NOISE_LINES: usize = 12;

fn var_name(rng: &mut Rng) -> String {
    (0..5)
        .map(|_| (b'A' + (rng.next_u64() % 26) as u8) as char)
        .collect()
}

/// Variable-tracking cases (RULER style): `chains` chains (1 or 2) of
/// `hops` assignments, one statement a line, inserted in chain order at
/// sorted random slots between 12 noise lines; the question names the last
/// variable of one chain (of the two at random).
pub fn var_tracking(hops: usize, chains: usize, cases: usize, seed: u64) -> Option<Vec<Case>> {
    if !VAR_HOPS.contains(&hops) || !(1..=2).contains(&chains) {
        return None;
    }
    let mut rng = Rng::new(seed ^ 0x7a70_0000 ^ ((hops as u64) << 4) ^ chains as u64);
    Some(
        (0..cases)
            .map(|t| {
                let mut names: Vec<String> = Vec::new();
                while names.len() < (hops + 1) * chains {
                    let n = var_name(&mut rng);
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
                let mut values: Vec<u64> = Vec::new();
                while values.len() < chains {
                    let v = 10_000 + rng.next_u64() % 90_000;
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
                // (slot, statement index, chain): sorted, so each chain keeps
                // its order and two chains interleave.
                let mut placed: Vec<(usize, usize, usize, String)> = Vec::new();
                for c in 0..chains {
                    let vars = &names[c * (hops + 1)..(c + 1) * (hops + 1)];
                    let mut slots: Vec<usize> = (0..=hops)
                        .map(|_| (rng.next_u64() % (VAR_NOISE_LINES as u64 + 1)) as usize)
                        .collect();
                    slots.sort_unstable();
                    for (i, &s) in slots.iter().enumerate() {
                        let rhs = if i == 0 {
                            values[c].to_string()
                        } else {
                            vars[i - 1].clone()
                        };
                        placed.push((s, i, c, format!("VAR {} = {rhs}.", vars[i])));
                    }
                }
                placed.sort();
                let mut lines = Vec::new();
                let mut next = placed.iter().peekable();
                for slot in 0..=VAR_NOISE_LINES {
                    while let Some(p) = next.next_if(|p| p.0 == slot) {
                        lines.push(p.3.clone());
                    }
                    if slot < VAR_NOISE_LINES {
                        lines.push(PASSKEY_FILLER.to_string());
                    }
                }
                let q = (rng.next_u64() % chains as u64) as usize;
                let name = &names[q * (hops + 1) + hops];
                let document = lines.join("\n");
                Case {
                    task: "var_tracking",
                    length: format!("{chains} chain{} {hops} hops", if chains > 1 { "s" } else { "" }),
                    trial: t,
                    prompt: format!(
                        "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{document}\n\nQuestion: What is the value of VAR {name}?\nAnswer:"
                    ),
                    answer: values[q].to_string(),
                    max_tokens: 32,
                    stop: None,
                    scoring: Scoring::FirstDigits,
                    calculator: false,
                    document: Some(document),
                }
            })
            .collect(),
    )
}

/// Copy-and-reverse string lengths.
pub const COPY_LENGTHS: [usize; 2] = [8, 16];
const COPY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn random_string(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| COPY_ALPHABET[(rng.next_u64() % COPY_ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// Copy and reverse (the project's definition of the task CAPABILITY.md
/// lists): random strings of letters and digits, repeated verbatim
/// (`reverse` false) or backwards, after two worked examples fixed per
/// length; the answer is the first word of the output.
pub fn copy(reverse: bool, len: usize, cases: usize, seed: u64) -> Option<Vec<Case>> {
    if !COPY_LENGTHS.contains(&len) {
        return None;
    }
    let f = |s: &str| -> String {
        if reverse {
            s.chars().rev().collect()
        } else {
            s.to_string()
        }
    };
    let head = if reverse {
        "Write each string backwards, character by character."
    } else {
        "Repeat each string exactly, character by character."
    };
    let mut ex = Rng::new(0xc0b7_0000 + len as u64);
    let examples: Vec<String> = (0..2)
        .map(|_| {
            let s = random_string(&mut ex, len);
            format!("String: {s}\nAnswer: {}", f(&s))
        })
        .collect();
    let mut rng = Rng::new(seed ^ 0xc097_0000 ^ ((len as u64) << 1) ^ reverse as u64);
    Some(
        (0..cases)
            .map(|t| {
                let s = random_string(&mut rng, len);
                Case {
                    task: "copy",
                    length: format!("{} {len}", if reverse { "reverse" } else { "copy" }),
                    trial: t,
                    prompt: format!(
                        "{head}\n\n{}\n\nString: {s}\nAnswer:",
                        examples.join("\n\n")
                    ),
                    answer: f(&s),
                    max_tokens: len + 8,
                    stop: Some("\n".into()),
                    scoring: Scoring::FirstWord,
                    calculator: false,
                    document: None,
                }
            })
            .collect(),
    )
}

/// Entities in the knowledge base of `kb_qa`.
pub const KB_ENTITIES: usize = 24;

/// An invented name: two or three syllables no language model has learned
/// a fact about.
fn invented_name(rng: &mut Rng) -> String {
    const ONSETS: [&str; 16] = [
        "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "th",
    ];
    const VOWELS: [&str; 6] = ["a", "e", "i", "o", "u", "ai"];
    const CODAS: [&str; 8] = ["", "", "n", "r", "l", "s", "rn", "sk"];
    let syllables = 2 + (rng.next_u64() % 2) as usize;
    let mut s = String::new();
    for _ in 0..syllables {
        s.push_str(ONSETS[(rng.next_u64() % ONSETS.len() as u64) as usize]);
        s.push_str(VOWELS[(rng.next_u64() % VOWELS.len() as u64) as usize]);
    }
    s.push_str(CODAS[(rng.next_u64() % CODAS.len() as u64) as usize]);
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// One entity of the knowledge base: its file name, its passage, and the
/// questions it answers (question, answer digits).
#[derive(Clone, Debug, PartialEq)]
pub struct KbEntity {
    pub file: String,
    pub text: String,
    pub facts: Vec<(String, String)>,
    /// The dated event of the passage as a noun phrase ("the founding of
    /// the X Society") and its year: [`kb_multi`] asks across two.
    pub event: (String, u64),
}

/// The knowledge base of `kb_qa` for `seed`: [`KB_ENTITIES`] invented
/// entities (societies, mountains, bridges), a short passage each with two
/// numeric facts and a name or two, so every question has one passage that
/// answers it and many that look alike.
pub fn kb_documents(seed: u64) -> Vec<KbEntity> {
    let mut rng = Rng::new(seed ^ 0x6b62_0000);
    let mut names: Vec<String> = Vec::new();
    let mut name = |rng: &mut Rng| loop {
        let n = invented_name(rng);
        if !names.contains(&n) {
            names.push(n.clone());
            return n;
        }
    };
    let mut out = Vec::new();
    for i in 0..KB_ENTITIES {
        let (a, b, c) = (name(&mut rng), name(&mut rng), name(&mut rng));
        let year = 1600 + rng.next_u64() % 400;
        let e = match i % 3 {
            0 => {
                let members = 100 + rng.next_u64() % 9900;
                KbEntity {
                    file: format!("society-{}.txt", a.to_lowercase()),
                    text: format!(
                        "The {a} Society was founded in {year} in the town of {b}. \
                         Today it has {members} members, and its president is {c} {}.",
                        name(&mut rng)
                    ),
                    event: (format!("the founding of the {a} Society"), year),
                    facts: vec![
                        (
                            format!("In what year was the {a} Society founded?"),
                            year.to_string(),
                        ),
                        (
                            format!("How many members does the {a} Society have?"),
                            members.to_string(),
                        ),
                    ],
                }
            }
            1 => {
                let height = 1000 + rng.next_u64() % 7000;
                KbEntity {
                    file: format!("mount-{}.txt", a.to_lowercase()),
                    text: format!(
                        "Mount {a} rises {height} metres above the {b} valley. \
                         It was first climbed in {year} by an expedition led by {c}."
                    ),
                    event: (format!("the first ascent of Mount {a}"), year),
                    facts: vec![
                        (
                            format!("How high is Mount {a}, in metres?"),
                            height.to_string(),
                        ),
                        (
                            format!("In what year was Mount {a} first climbed?"),
                            year.to_string(),
                        ),
                    ],
                }
            }
            _ => {
                let length = 50 + rng.next_u64() % 1950;
                KbEntity {
                    file: format!("bridge-{}.txt", a.to_lowercase()),
                    text: format!(
                        "The {a} Bridge crosses the river {b}. It is {length} metres long \
                         and was opened in {year}, after plans drawn by the engineer {c}."
                    ),
                    event: (format!("the opening of the {a} Bridge"), year),
                    facts: vec![
                        (
                            format!("How long is the {a} Bridge, in metres?"),
                            length.to_string(),
                        ),
                        (
                            format!("In what year was the {a} Bridge opened?"),
                            year.to_string(),
                        ),
                    ],
                }
            }
        };
        out.push(e);
    }
    out
}

/// A question case of the runtime tasks: the question in the plain
/// "Answer the question." form, 12 tokens, no document.
fn question_case(
    task: &'static str,
    length: String,
    trial: usize,
    question: &str,
    answer: String,
    scoring: Scoring,
) -> Case {
    Case {
        task,
        length,
        trial,
        prompt: format!("Answer the question.\n\nQuestion: {question}\nAnswer:"),
        answer,
        max_tokens: 12,
        stop: None,
        scoring,
        calculator: false,
        document: None,
    }
}

/// Knowledge-base QA (the project's definition of the task CAPABILITY.md
/// lists): questions on the invented facts of [`kb_documents`]`(seed)`,
/// one entity after another, the fact asked alternating. The prompt has no
/// passage: the model alone can only guess; with the runtime, `search`
/// over the base finds the passage.
pub fn kb_qa(cases: usize, seed: u64) -> Vec<Case> {
    let docs = kb_documents(seed);
    let mut rng = Rng::new(seed ^ 0x6b71_0000);
    (0..cases)
        .map(|t| {
            let e = &docs[(t * 7 + (rng.next_u64() % 3) as usize) % docs.len()];
            let (q, a) = &e.facts[(rng.next_u64() % e.facts.len() as u64) as usize];
            question_case(
                "kb_qa",
                format!("{KB_ENTITIES} passages"),
                t,
                q,
                a.clone(),
                Scoring::FirstDigits,
            )
        })
        .collect()
}

/// Two-hop knowledge-base QA: how many years lie between the dated events
/// of two passages of [`kb_documents`]`(seed)` (the later year minus the
/// earlier). No passage holds the answer: it takes two lookups and a
/// subtraction, so the model alone cannot get it, nor a loop that answers
/// from the one passage it read: the measure of decomposition.
pub fn kb_multi(cases: usize, seed: u64) -> Vec<Case> {
    let docs = kb_documents(seed);
    let mut rng = Rng::new(seed ^ 0x6b6d_0000);
    (0..cases)
        .map(|t| {
            let i = (rng.next_u64() % docs.len() as u64) as usize;
            let mut j = (rng.next_u64() % docs.len() as u64) as usize;
            // Two passages with different years (a difference of 0 years
            // reads as a trick question); 24 passages over 400 years
            // always have one.
            for _ in 0..docs.len() {
                if j != i && docs[j].event.1 != docs[i].event.1 {
                    break;
                }
                j = (j + 1) % docs.len();
            }
            let (a, b) = (&docs[i].event, &docs[j].event);
            let q = format!("How many years passed between {} and {}?", a.0, b.0);
            question_case(
                "kb_multi",
                "2 passages".into(),
                t,
                &q,
                a.1.abs_diff(b.1).to_string(),
                Scoring::FirstDigits,
            )
        })
        .collect()
}

/// Multi-step word problems (the project's definition of the task
/// CAPABILITY.md lists): templated stories of 2, 3 or 4 steps whose
/// intermediate values must be computed and used again, with operands of
/// two and three digits so that the model alone cannot do them in its head
/// (it gets 2-digit products wrong). Every intermediate value is a positive
/// whole number. Buckets "2 steps", "3 steps", "4 steps".
pub const WORD_STEPS: [usize; 3] = [2, 3, 4];

pub fn word_problems(steps: usize, cases: usize, seed: u64) -> Vec<Case> {
    let mut rng = Rng::new(seed ^ 0x7770_0000 ^ steps as u64);
    const THINGS: [(&str, &str, &str); 4] = [
        ("crates", "apples", "a shop"),
        ("boxes", "pens", "a school"),
        ("bags", "marbles", "a club"),
        ("packs", "cards", "a library"),
    ];
    (0..cases)
        .map(|t| {
            let (unit, item, owner) = THINGS[(rng.next_u64() % 4) as usize];
            let a = operand(&mut rng, 12, 48);
            let b = operand(&mut rng, 12, 36);
            let mut total = a * b;
            let mut text = format!(
                "{} has {a} {unit} with {b} {item} in each.",
                capitalized(owner)
            );
            if steps >= 3 {
                let c = operand(&mut rng, 101, 499);
                total += c;
                text.push_str(&format!(" It buys {c} more {item}."));
            }
            // The step that takes away: less than what there is.
            let d = operand(&mut rng, 11, (total / 3).max(11));
            total -= d;
            text.push_str(&format!(" Then it gives away {d} {item}."));
            let q = if steps >= 4 {
                // Shared out evenly: add what makes the total divisible.
                let e = operand(&mut rng, 3, 9);
                let r = total % e;
                if r != 0 {
                    let extra = e - r;
                    total += extra;
                    text.push_str(&format!(" After that it finds {extra} more {item}."));
                }
                total /= e;
                format!("It shares all its {item} equally among {e} groups. How many {item} does each group get?")
            } else {
                format!("How many {item} does it have now?")
            };
            Case {
                task: "word_problems",
                length: format!("{steps} steps"),
                trial: t,
                prompt: format!("Answer the question.\n\n{text} {q}\nAnswer:"),
                answer: total.to_string(),
                max_tokens: 16,
                stop: None,
                scoring: Scoring::FirstDigits,
                calculator: false,
                document: None,
            }
        })
        .collect()
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Tool choice (the project's definition of the task CAPABILITY.md lists):
/// questions of three kinds, one bucket each, named after the tool the
/// question needs: "calculator" (a product of a 3-digit and a 2-digit
/// number), "search" (a fact of [`kb_documents`]`(seed)`, as kb_qa) and
/// "none" (the capital of a well-known country: the model knows it, and a
/// call is wasted). With the runtime the report also scores the calls made
/// against the bucket's tool (precision and recall).
pub const TOOL_CHOICE_KINDS: [&str; 3] = ["calculator", "search", "none"];

const CAPITALS: [(&str, &str); 12] = [
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Japan", "Tokyo"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("England", "London"),
    ("Russia", "Moscow"),
    ("Egypt", "Cairo"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Ireland", "Dublin"),
    ("Austria", "Vienna"),
];

pub fn tool_choice(kind: &str, cases: usize, seed: u64) -> Vec<Case> {
    let docs = kb_documents(seed);
    let mut rng = Rng::new(seed ^ 0x7463_0000 ^ kind.len() as u64);
    (0..cases)
        .map(|t| {
            let (q, answer, scoring) = match kind {
                "calculator" => {
                    let (a, b) = (operand(&mut rng, 100, 999), operand(&mut rng, 10, 99));
                    (
                        format!("What is {a} times {b}?"),
                        (a * b).to_string(),
                        Scoring::FirstDigits,
                    )
                }
                "search" => {
                    let e = &docs[(rng.next_u64() % docs.len() as u64) as usize];
                    let (q, a) = &e.facts[(rng.next_u64() % e.facts.len() as u64) as usize];
                    (q.clone(), a.clone(), Scoring::FirstDigits)
                }
                _ => {
                    let (c, cap) = CAPITALS[(rng.next_u64() % CAPITALS.len() as u64) as usize];
                    (
                        format!("What is the capital of {c}?"),
                        cap.to_string(),
                        Scoring::Word,
                    )
                }
            };
            question_case("tool_choice", kind.to_string(), t, &q, answer, scoring)
        })
        .collect()
}

/// Precision and recall of the calls made on tool-choice cases, summed
/// over them: each case expects its bucket's tool (none for "none"), and a
/// case's calls count once per distinct tool. `cases`: (bucket, tools
/// called). None where nothing was called or expected.
pub fn call_scores<'a>(
    cases: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>,
) -> (Option<f64>, Option<f64>) {
    let (mut hit, mut made, mut wanted) = (0usize, 0usize, 0usize);
    for (bucket, mut called) in cases {
        called.sort_unstable();
        called.dedup();
        let want = (bucket != "none").then_some(bucket);
        made += called.len();
        wanted += want.is_some() as usize;
        hit += called.iter().filter(|c| Some(**c) == want).count();
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    (ratio(hit, made), ratio(hit, wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_problems_compute_whole_intermediate_values() {
        for steps in WORD_STEPS {
            let cases = word_problems(steps, 40, 5);
            assert_eq!(cases, word_problems(steps, 40, 5), "deterministic per seed");
            for c in &cases {
                assert_eq!(c.length, format!("{steps} steps"));
                let v: u64 = c.answer.parse().unwrap();
                assert!(v > 0, "{}", c.prompt);
                let nums: Vec<u64> = c
                    .prompt
                    .split(|ch: char| !ch.is_ascii_digit())
                    .filter(|t| !t.is_empty())
                    .map(|t| t.parse().unwrap())
                    .collect();
                // Recompute from the story's numbers in order.
                let mut total = nums[0] * nums[1];
                let mut i = 2;
                if steps >= 3 {
                    total += nums[i];
                    i += 1;
                }
                total -= nums[i];
                i += 1;
                if steps >= 4 {
                    if nums.len() == i + 2 {
                        total += nums[i];
                        i += 1;
                    }
                    assert_eq!(total % nums[i], 0, "{}", c.prompt);
                    total /= nums[i];
                }
                assert_eq!(total, v, "{}", c.prompt);
            }
        }
    }

    #[test]
    fn tool_choice_buckets_need_their_tool() {
        let docs = kb_documents(2);
        for kind in TOOL_CHOICE_KINDS {
            let cases = tool_choice(kind, 20, 2);
            assert_eq!(cases, tool_choice(kind, 20, 2));
            for c in &cases {
                assert_eq!(c.length, kind);
                match kind {
                    "calculator" => assert!(c.prompt.contains(" times ")),
                    "search" => assert!(docs.iter().any(|d| d
                        .facts
                        .iter()
                        .any(|(q, a)| c.prompt.contains(q.as_str()) && *a == c.answer))),
                    _ => assert!(CAPITALS.iter().any(|(_, cap)| *cap == c.answer)),
                }
            }
        }
        let none = &tool_choice("none", 1, 0)[0];
        assert!(correct(none, &format!(" {}.\n\nThe answer", none.answer)));
        assert!(correct_answer(
            none,
            &format!("The capital is {}", none.answer)
        ));
        assert!(!correct(
            none,
            " I do not know.\nassistant\nIt is a country."
        ));
        assert!(
            !correct(none, &format!("{}n", none.answer)),
            "a word, not a prefix"
        );
    }

    #[test]
    fn call_scores_count_each_tool_once() {
        let (p, r) = call_scores([
            ("calculator", vec!["calculator", "calculator"]),
            ("search", vec!["calculator"]),
            ("none", vec![]),
            ("none", vec!["search"]),
        ]);
        assert_eq!(p, Some(1.0 / 3.0));
        assert_eq!(r, Some(0.5));
        assert_eq!(call_scores([("none", vec![])]), (None, None));
    }

    /// Every two-hop question names two passages' events, and its answer
    /// is the difference of their years.
    #[test]
    fn kb_multi_asks_across_two_passages() {
        let docs = kb_documents(3);
        let cases = kb_multi(30, 3);
        assert_eq!(cases, kb_multi(30, 3), "deterministic per seed");
        for c in &cases {
            let named: Vec<&KbEntity> = docs
                .iter()
                .filter(|d| {
                    c.prompt.contains(&format!("{} and", d.event.0))
                        || c.prompt.contains(&format!("{}?", d.event.0))
                })
                .collect();
            assert_eq!(named.len(), 2, "{}", c.prompt);
            assert!(named
                .iter()
                .all(|d| d.text.contains(&d.event.1.to_string())));
            let want = named[0].event.1.abs_diff(named[1].event.1);
            assert!(want > 0);
            assert_eq!(c.answer, want.to_string());
        }
    }

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
    fn arithmetic_follows_the_protocol() {
        let c = arithmetic("mul3", false, 25, 4).unwrap();
        assert_eq!(c, arithmetic("mul3", false, 25, 4).unwrap());
        assert_eq!(c.len(), 25);
        let p = &c[0].prompt;
        let blocks: Vec<&str> = p.split("\n\n").collect();
        assert_eq!(blocks.len(), 4, "three examples and the question");
        for b in &blocks[..3] {
            let (q, a) = b.split_once("\nA: ").unwrap();
            let (x, y) = q["Q: What is ".len()..q.len() - 1]
                .split_once(" * ")
                .unwrap();
            let (x, y): (u64, u64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((100..=999).contains(&x) && (100..=999).contains(&y));
            assert_eq!(a, (x * y).to_string());
        }
        assert!(blocks[3].starts_with("Q: What is ") && blocks[3].ends_with("?\nA:"));
        // The examples are fixed per kind; the questions follow the seed.
        let other = arithmetic("mul3", false, 25, 5).unwrap();
        assert_eq!(
            p.rsplit_once("\n\n").unwrap().0,
            other[0].prompt.rsplit_once("\n\n").unwrap().0
        );
        assert_ne!(c[0].answer, other[0].answer);
        let a = arithmetic("add2", true, 3, 4).unwrap();
        let ex = a[0].prompt.split("\n\n").next().unwrap();
        let (q, ans) = ex.split_once("\nA: ").unwrap();
        let (x, y) = q["Q: What is ".len()..q.len() - 1]
            .split_once(" + ")
            .unwrap();
        let v: u64 = x.parse::<u64>().unwrap() + y.parse::<u64>().unwrap();
        assert_eq!(ans, format!("<<{x}+{y}={v}>>{v}"), "no spaces inside << >>");
        assert_eq!((a[0].max_tokens, c[0].max_tokens), (40, 16));
        assert!(a[0].calculator && !c[0].calculator);
        assert!(arithmetic("div2", false, 1, 0).is_none());
    }

    #[test]
    fn var_tracking_follows_the_protocol() {
        for (hops, chains) in [(1, 1), (3, 2), (6, 2)] {
            let c = var_tracking(hops, chains, 20, 9).unwrap();
            assert_eq!(c, var_tracking(hops, chains, 20, 9).unwrap());
            for case in &c {
                let p = &case.prompt;
                assert!(p.starts_with("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"));
                let body = &p[p.find("\n\n").unwrap() + 2..p.rfind("\n\nQuestion: ").unwrap()];
                let lines: Vec<&str> = body.split('\n').collect();
                assert_eq!(lines.iter().filter(|l| **l == PASSKEY_FILLER).count(), 12);
                let stmts: Vec<&str> = lines
                    .iter()
                    .copied()
                    .filter(|l| l.starts_with("VAR "))
                    .collect();
                assert_eq!(stmts.len(), (hops + 1) * chains);
                assert_eq!(stmts.len() + 12, lines.len());
                // Follow the asked variable back to its value, in text order.
                let q = &p[p.rfind("VAR ").unwrap() + 4..p.rfind('?').unwrap()];
                let mut name = q.to_string();
                let mut steps = 0;
                let value = loop {
                    let s = stmts
                        .iter()
                        .find(|s| s.starts_with(&format!("VAR {name} = ")))
                        .unwrap();
                    let rhs = s[s.find(" = ").unwrap() + 3..s.len() - 1].to_string();
                    steps += 1;
                    if rhs.chars().all(|c| c.is_ascii_digit()) {
                        break rhs;
                    }
                    // Each assignment comes after the one it reads.
                    let at = |n: &str| {
                        lines
                            .iter()
                            .position(|l| l.starts_with(&format!("VAR {n} = ")))
                            .unwrap()
                    };
                    assert!(at(&rhs) < at(&name));
                    name = rhs;
                };
                assert_eq!(steps, hops + 1);
                assert_eq!(value, case.answer);
                assert_eq!(value.len(), 5);
                assert!(p.ends_with("?\nAnswer:"));
            }
        }
        assert!(var_tracking(2, 1, 1, 0).is_none());
    }

    #[test]
    fn copy_and_reverse() {
        let c = copy(true, 16, 5, 2).unwrap();
        assert_eq!(c, copy(true, 16, 5, 2).unwrap());
        let s = c[0].prompt.rsplit_once("String: ").unwrap().1;
        let s = &s[..s.find('\n').unwrap()];
        assert_eq!(s.len(), 16);
        assert_eq!(c[0].answer, s.chars().rev().collect::<String>());
        assert!(correct(&c[0], &format!(" {}\n", c[0].answer)));
        assert!(!correct(&c[0], &format!(" {}x", c[0].answer)));
        let k = copy(false, 8, 1, 2).unwrap();
        assert!(k[0]
            .prompt
            .ends_with(&format!("String: {}\nAnswer:", k[0].answer)));
    }

    #[test]
    fn scoring_rules() {
        let a = &arithmetic("add3", true, 1, 1).unwrap()[0];
        assert!(correct(a, &format!(" <<1+2={0}>>{0}", a.answer)));
        assert!(!correct(a, &format!(" {0}", a.answer)), "no call: wrong");
        assert!(!correct(a, &format!(" <<{0}>>7", a.answer)));
        let p = &arithmetic("add3", false, 1, 1).unwrap()[0];
        assert!(correct(p, &format!(" {}\n", p.answer)));
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

    #[test]
    fn kb_qa_questions_have_one_passage_each() {
        let docs = kb_documents(3);
        assert_eq!(docs.len(), KB_ENTITIES);
        assert_eq!(docs, kb_documents(3));
        assert_ne!(docs, kb_documents(4));
        let mut files: Vec<&str> = docs.iter().map(|d| d.file.as_str()).collect();
        files.sort_unstable();
        files.dedup();
        assert_eq!(files.len(), KB_ENTITIES, "file names are unique");
        let cases = kb_qa(20, 3);
        assert_eq!(cases.len(), 20);
        for c in &cases {
            // The entity's name is in exactly one passage, which holds the answer.
            let q = c.prompt.split("Question: ").nth(1).unwrap();
            let holders: Vec<&KbEntity> = docs
                .iter()
                .filter(|d| d.facts.iter().any(|(fq, _)| q.starts_with(fq.as_str())))
                .collect();
            assert_eq!(holders.len(), 1, "{q}");
            assert!(holders[0].text.contains(&c.answer), "{}", c.answer);
            assert!(c.answer.chars().all(|ch| ch.is_ascii_digit()));
            assert!(!c.prompt.contains(&c.answer));
        }
        // Entities vary across the cases (a sweep with a random step of 0
        // to 2, so neighbours may meet).
        let mut qs: Vec<&str> = cases.iter().map(|c| c.prompt.as_str()).collect();
        qs.sort_unstable();
        qs.dedup();
        assert!(qs.len() >= 10, "{}", qs.len());
    }
}
