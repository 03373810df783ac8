//! The knowledge base end to end with the real encoder: index, save, reopen
//! and search; deterministic chunking; adding and replacing files; CPU and
//! GPU scoring agree; a base from another encoder and damaged files are
//! clear errors.

mod common;
use common::minilm_dir;
use lottery::engine::reference::Rng;
use lottery::models::arch::bert::BertEncoder;
use lottery::models::kb::{chunk_text, ChunkOptions, KnowledgeBase, SearchDevice};
use lottery::{Gpu, GpuOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

fn encoder() -> &'static BertEncoder {
    static E: OnceLock<BertEncoder> = OnceLock::new();
    E.get_or_init(|| {
        let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());
        BertEncoder::load(gpu, &minilm_dir(), None, &mut |_, _| {}).unwrap()
    })
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lottery-kb-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Topic paragraphs; each file mixes them with seeded filler so chunk
/// boundaries and file layouts differ from seed to seed.
const TOPICS: [(&str, &str); 5] = [
    ("volcano", "Volcanoes form where magma from the mantle rises through the crust. When pressure builds, the eruption throws out ash, gas and lava, and the lava cools into new basalt rock."),
    ("bread", "To bake bread, mix flour, water, salt and yeast, knead the dough until it is elastic, let it rise for an hour, shape the loaf and bake it in a hot oven until the crust is brown."),
    ("tcp", "TCP gives programs a reliable byte stream over an unreliable network: it numbers every byte, acknowledges what arrived, retransmits what was lost and slows down when the network is congested."),
    ("violin", "A violin has four strings tuned in fifths. The player draws a bow strung with horsehair across the strings, and the wooden body amplifies their vibration."),
    ("tax", "An income tax return lists what a person earned during the year, subtracts allowed deductions and computes the tax owed or the refund due."),
];

const FILLER: [&str; 8] = [
    "The weather was mild for the season.",
    "Several people attended the meeting on Tuesday.",
    "The report was filed in the archive.",
    "A new edition of the guide appeared last spring.",
    "Nobody remembered who had left the door open.",
    "The committee agreed to revisit the question later.",
    "Some of the pages were missing from the copy.",
    "The train arrived a few minutes late.",
];

fn write_corpus(dir: &Path, seed: u64) -> Vec<PathBuf> {
    let mut rng = Rng::new(seed);
    let mut files = Vec::new();
    for (i, (name, text)) in TOPICS.iter().enumerate() {
        let mut body = String::new();
        for _ in 0..(rng.next_u64() % 3) {
            let n = 2 + rng.next_u64() % 4;
            let para: Vec<&str> = (0..n)
                .map(|_| FILLER[(rng.next_u64() % FILLER.len() as u64) as usize])
                .collect();
            body.push_str(&para.join(" "));
            body.push_str("\n\n");
        }
        body.push_str(text);
        body.push_str("\n\n");
        body.push_str(FILLER[i % FILLER.len()]);
        body.push('\n');
        let p = dir.join(format!("{name}.txt"));
        std::fs::write(&p, body).unwrap();
        files.push(p);
    }
    files
}

const QUERIES: [(&str, &str); 5] = [
    ("volcano", "Why does molten rock come out of a mountain?"),
    ("bread", "How do I make a loaf at home?"),
    ("tcp", "How does a network protocol recover lost packets?"),
    ("violin", "Which string instrument is played with a bow?"),
    ("tax", "How is the amount I owe the government calculated?"),
];

fn opts() -> ChunkOptions {
    ChunkOptions {
        max_tokens: 48,
        overlap_tokens: 12,
    }
}

#[test]
fn index_save_open_search_round_trip() {
    let enc = encoder();
    for seed in [1u64, 2] {
        let dir = tmp(&format!("rt{seed}"));
        let files = write_corpus(&dir.join("docs").tap_mkdir(), seed);
        let kb_dir = dir.join("kb");
        let mut kb = KnowledgeBase::create(&kb_dir, enc, opts()).unwrap();
        let r = kb.add_files(enc, &files, &mut |_, _| {}).unwrap();
        assert_eq!(r.added.len(), files.len());
        assert!(kb.len() >= files.len());
        for c in kb.chunks() {
            assert!(c.tokens <= opts().max_tokens, "{c:?}");
            let src = std::fs::read_to_string(&c.source).unwrap();
            assert_eq!(&src[c.start..c.end], c.text);
        }
        kb.save().unwrap();
        let back = KnowledgeBase::open(&kb_dir).unwrap();
        assert_eq!(back.chunks(), kb.chunks());
        assert_eq!(back.vectors(), kb.vectors());
        for (topic, q) in QUERIES {
            let hits = back.search(enc, q, 3, SearchDevice::Cpu).unwrap();
            assert_eq!(hits.len(), 3);
            assert!(
                hits[0].chunk.source.ends_with(&format!("{topic}.txt")),
                "seed {seed}: `{q}` found {:?}",
                hits.iter()
                    .map(|h| (&h.chunk.source, h.score))
                    .collect::<Vec<_>>()
            );
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            let gpu = back.search(enc, q, 3, SearchDevice::Gpu).unwrap();
            for (a, b) in hits.iter().zip(&gpu) {
                assert_eq!(a.chunk.id, b.chunk.id);
                assert!((a.score - b.score).abs() < 1e-5);
            }
        }
        // k larger than the base returns everything, sorted.
        assert_eq!(
            back.search(enc, "x", 10_000, SearchDevice::Auto)
                .unwrap()
                .len(),
            back.len()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

trait Mk {
    fn tap_mkdir(self) -> Self;
}
impl Mk for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn chunking_and_indexing_are_deterministic() {
    let enc = encoder();
    let dir = tmp("det");
    let files = write_corpus(&dir.join("docs").tap_mkdir(), 7);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let count = |s: &str| enc.count_tokens(s);
    let a = chunk_text(&text, &opts(), &count).unwrap();
    assert_eq!(a, chunk_text(&text, &opts(), &count).unwrap());
    let build = |name: &str| {
        let mut kb = KnowledgeBase::create(&dir.join(name), enc, opts()).unwrap();
        kb.add_files(enc, &files, &mut |_, _| {}).unwrap();
        kb.save().unwrap();
        std::fs::read(dir.join(name).join("vectors.safetensors")).unwrap()
    };
    assert_eq!(build("a"), build("b"));
    assert_eq!(
        std::fs::read(dir.join("a/chunks.jsonl")).unwrap(),
        std::fs::read(dir.join("b/chunks.jsonl")).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn adding_replacing_and_skipping_files() {
    let enc = encoder();
    let dir = tmp("add");
    let files = write_corpus(&dir.join("docs").tap_mkdir(), 3);
    let kb_dir = dir.join("kb");
    let mut kb = KnowledgeBase::open_or_create(&kb_dir, enc, opts()).unwrap();
    kb.add_files(enc, &files[..2], &mut |_, _| {}).unwrap();
    kb.save().unwrap();
    let first = kb.len();
    let mut kb = KnowledgeBase::open_or_create(&kb_dir, enc, opts()).unwrap();
    let r = kb.add_files(enc, &files, &mut |_, _| {}).unwrap();
    assert_eq!(
        (r.added.len(), r.unchanged.len(), r.replaced.len()),
        (3, 2, 0)
    );
    kb.save().unwrap();
    let all = KnowledgeBase::open(&kb_dir).unwrap();
    assert_eq!(all.sources().len(), 5);
    assert!(all.len() > first);
    // Editing a file replaces its chunks, and only its chunks.
    std::fs::write(
        &files[0],
        "Completely new text about gardening: water the tomatoes every morning.\n",
    )
    .unwrap();
    let mut kb = KnowledgeBase::open(&kb_dir).unwrap();
    let before_other: Vec<String> = kb
        .chunks()
        .iter()
        .filter(|c| !c.source.ends_with("volcano.txt"))
        .map(|c| c.text.clone())
        .collect();
    let r = kb.add_files(enc, &files[..1], &mut |_, _| {}).unwrap();
    assert_eq!(r.replaced.len(), 1);
    kb.save().unwrap();
    let kb = KnowledgeBase::open(&kb_dir).unwrap();
    let volcano: Vec<&str> = kb
        .chunks()
        .iter()
        .filter(|c| c.source.ends_with("volcano.txt"))
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(
        volcano,
        ["Completely new text about gardening: water the tomatoes every morning."]
    );
    let other: Vec<String> = kb
        .chunks()
        .iter()
        .filter(|c| !c.source.ends_with("volcano.txt"))
        .map(|c| c.text.clone())
        .collect();
    assert_eq!(other, before_other);
    assert!(kb.chunks().iter().enumerate().all(|(i, c)| c.id == i));
    let hit = kb
        .search(
            enc,
            "when should I water my tomato plants",
            1,
            SearchDevice::Cpu,
        )
        .unwrap();
    assert!(hit[0].chunk.text.contains("tomatoes"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn another_encoder_damaged_files_and_bad_input_are_clear_errors() {
    let enc = encoder();
    let dir = tmp("err");
    let files = write_corpus(&dir.join("docs").tap_mkdir(), 5);
    let kb_dir = dir.join("kb");
    let mut kb = KnowledgeBase::create(&kb_dir, enc, opts()).unwrap();
    kb.add_files(enc, &files[..1], &mut |_, _| {}).unwrap();
    kb.save().unwrap();
    // The same model quantized is another encoder: its vectors differ.
    let other = BertEncoder::load(
        enc.gpu.clone(),
        &minilm_dir(),
        Some(lottery::engine::WeightFormat::Q8_0),
        &mut |_, _| {},
    )
    .unwrap();
    let kb = KnowledgeBase::open(&kb_dir).unwrap();
    let e = kb
        .search(&other, "volcano", 1, SearchDevice::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another encoder"), "{e}");
    let e = KnowledgeBase::open_or_create(&kb_dir, &other, opts())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("another encoder"), "{e}");
    // A file that is not UTF-8 is named.
    let bin = dir.join("docs/blob.txt");
    std::fs::write(&bin, [0x66, 0x6f, 0xff, 0xfe]).unwrap();
    let mut kb = KnowledgeBase::open(&kb_dir).unwrap();
    let e = kb
        .add_files(enc, &[bin.clone()], &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blob.txt") && e.contains("UTF-8") && e.contains("offset 2"),
        "{e}"
    );
    // Damaged files: each names the file and what is wrong.
    let vectors = std::fs::read(kb_dir.join("vectors.safetensors")).unwrap();
    std::fs::write(
        kb_dir.join("vectors.safetensors"),
        &vectors[..vectors.len() - 8],
    )
    .unwrap();
    let e = KnowledgeBase::open(&kb_dir).err().unwrap().to_string();
    assert!(e.contains("vectors.safetensors"), "{e}");
    std::fs::write(kb_dir.join("vectors.safetensors"), &vectors).unwrap();
    let chunks = std::fs::read_to_string(kb_dir.join("chunks.jsonl")).unwrap();
    let first_line = chunks.lines().next().unwrap().to_string();
    std::fs::write(
        kb_dir.join("chunks.jsonl"),
        format!("{chunks}{first_line}\n"),
    )
    .unwrap();
    let e = KnowledgeBase::open(&kb_dir).err().unwrap().to_string();
    assert!(e.contains("chunks.jsonl"), "{e}");
    std::fs::write(kb_dir.join("chunks.jsonl"), "{not json\n").unwrap();
    let e = KnowledgeBase::open(&kb_dir).err().unwrap().to_string();
    assert!(e.contains("chunks.jsonl line 1"), "{e}");
    std::fs::remove_file(kb_dir.join("kb.json")).unwrap();
    let e = KnowledgeBase::open(&kb_dir).err().unwrap().to_string();
    assert!(e.contains("kb.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn search_and_prompt_search_tools() {
    use lottery::models::runtime::retrieval::{KbSearch, PromptSearch};
    use lottery::models::runtime::Tool;
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());
    let enc = Arc::new(BertEncoder::load(gpu, &minilm_dir(), None, &mut |_, _| {}).unwrap());
    let dir = tmp("tools");
    let files = write_corpus(&dir.join("docs").tap_mkdir(), 9);
    let mut kb = KnowledgeBase::create(&dir.join("kb"), &enc, opts()).unwrap();
    kb.add_files(&enc, &files, &mut |_, _| {}).unwrap();
    let search = KbSearch::new(Arc::new(kb), enc.clone()).unwrap();
    let out = search
        .call(&serde_json::json!({"query": "how is bread made", "k": 2}))
        .unwrap();
    // Passages only (no rank or source for the model to copy), best first.
    assert!(out.starts_with("To bake bread"), "{out}");
    let hits = search.hits("how is bread made", 2).unwrap();
    assert!(hits[0].chunk.source.ends_with("bread.txt"), "{hits:?}");
    // An exact invented term the embedding cannot place still finds its
    // passage (the lexical half of the score); it is what the task names,
    // so the loop must read before answering.
    assert!(search.relevant_to("What does horsehair do on a violin?"));
    assert!(!search.relevant_to("What is 17 times 23?"));
    assert!(search
        .call(&serde_json::json!({"query": "x", "k": 99}))
        .unwrap_err()
        .contains("`k`"));
    assert!(search.call(&serde_json::json!({"query": ""})).is_err());
    // A passkey haystack (../shared/CAPABILITY.md protocol) on seeded keys
    // and depths: the chunk with the key is the closest to the question.
    let filler =
        "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
    let mut rng = Rng::new(31);
    for _ in 0..3 {
        let key = 10_000 + rng.next_u64() % 90_000;
        let n = 40;
        let depth = (rng.next_u64() % n as u64) as usize;
        let mut parts = vec!["There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there.".to_string()];
        parts.push(vec![filler; depth].join(" "));
        parts.push(format!(
            "The pass key is {key}. Remember it. {key} is the pass key."
        ));
        parts.push(vec![filler; n - depth].join(" "));
        let context = parts.join("\n");
        let ps = PromptSearch::new(enc.clone(), &context).unwrap();
        assert!(ps.units().len() > 10);
        let out = ps
            .call(&serde_json::json!({"question": "What is the pass key?", "k": 1}))
            .unwrap();
        assert!(
            out.contains(&key.to_string()),
            "key {key} at depth {depth}: {out}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// prompt_search on a document with a chain of references: the lines come
/// back best first, a line is not returned twice in one task, and an
/// answer naming something the document says more about is checked.
#[test]
fn prompt_search_returns_each_line_once_and_checks_answers() {
    use lottery::models::runtime::retrieval::PromptSearch;
    use lottery::models::runtime::Tool;
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());
    let enc = Arc::new(BertEncoder::load(gpu, &minilm_dir(), None, &mut |_, _| {}).unwrap());
    let doc = "The grass is green. The sky is blue.\nVAR QWERT = 48213.\nThe sun is yellow.\n\
               VAR ZXCVB = QWERT.\nHere we go.\nVAR POIUY = ZXCVB.\n\
               {\"9f1c2a7e-11b3-4c5d-8e9f-0a1b2c3d4e5f\": 481516, \"0b7d4e21-9a8c-4f3e-b2d1-77aa55cc33ee\": 234234}";
    let ps = PromptSearch::new(enc, doc).unwrap();
    // Lines, sentences, and the JSON object's pairs are the units.
    assert!(ps.units().len() >= 9, "{:?}", ps.units());
    let out = ps
        .call(&serde_json::json!({"question": "value of key 0b7d4e21-9a8c-4f3e-b2d1-77aa55cc33ee"}))
        .unwrap();
    assert_eq!(out, "\"0b7d4e21-9a8c-4f3e-b2d1-77aa55cc33ee\": 234234}");
    let task = "What is the value of VAR POIUY?";
    let out = ps.call(&serde_json::json!({"question": task})).unwrap();
    assert_eq!(out.lines().next(), Some("VAR POIUY = ZXCVB."), "{out}");
    // The answer "ZXCVB" names a variable the document defines: the check
    // shows its line, then the next; a number it holds ends the checks.
    let (args, r) = ps.check_answer(task, "ZXCVB").expect("a check");
    assert_eq!(args["question"], "ZXCVB");
    assert_eq!(r, "VAR ZXCVB = QWERT.");
    // An answer restating a line names something new in it: QWERT.
    let (_, r) = ps
        .check_answer(task, "VAR ZXCVB = QWERT.")
        .expect("a check");
    assert_eq!(r, "VAR QWERT = 48213.");
    assert!(ps.check_answer(task, "48213").is_none());
    assert!(ps.check_answer(task, "POIUY").is_none(), "nothing new");
    // Asked again when everything relevant has been shown: the best line
    // alone, not the list again.
    let again = ps.call(&serde_json::json!({"question": task})).unwrap();
    assert_eq!(again, "VAR POIUY = ZXCVB.");
}
