//! Retrieval-augmented answers: index a folder of text files into a
//! knowledge base (all-MiniLM-L6-v2 on the GPU), find the passages closest to
//! a question, and let the language model answer from them.
//!   cargo run --release --example knowledge_base -- docs/ "How do I reset the device?"
use lottery::models::arch::bert::BertEncoder;
use lottery::models::kb::{collect_files, ChunkOptions, KnowledgeBase, SearchDevice};
use lottery::{ChatMessage, GenerateOptions, Gpu, GpuOptions, Model, Session, SessionOptions};
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let folder = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let question = args
        .next()
        .unwrap_or_else(|| "What does this project do?".into());
    let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
    let encoder_dir = lottery::default_embed_model_path().ok_or_else(|| {
        anyhow::anyhow!("run scripts/fetch-minilm.sh (or set LOTTERY_EMBED_MODEL)")
    })?;
    let encoder = BertEncoder::load(gpu.clone(), &encoder_dir, None, &mut |_, _| {})?;
    // An in-memory base next to the folder's files; `save()` would persist it.
    let kb_dir = std::env::temp_dir().join(format!("lottery-example-kb-{}", std::process::id()));
    let mut kb = KnowledgeBase::create(&kb_dir, &encoder, ChunkOptions::default())?;
    let files = collect_files(&[folder])?;
    let report = kb.add_files(&encoder, &files, &mut |_, _| {})?;
    eprintln!(
        "indexed {} files into {} chunks",
        report.added.len(),
        kb.len()
    );
    let hits = kb.search(&encoder, &question, 3, SearchDevice::Auto)?;
    let mut context = String::new();
    for (i, h) in hits.iter().enumerate() {
        eprintln!(
            "[{}] {:.3} {}:{}",
            i + 1,
            h.score,
            h.chunk.source,
            h.chunk.line
        );
        context.push_str(&format!("[{}] {}\n\n", i + 1, h.chunk.text));
    }
    let path = lottery::default_model_path()
        .ok_or_else(|| anyhow::anyhow!("run scripts/fetch-model.sh (or set LOTTERY_MODEL)"))?;
    let model = Arc::new(Model::load(gpu, &path, &mut |_, _| {})?);
    let template = model
        .chat_template
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("this model has no chat template"))?;
    let prompt = template.render(
        &[ChatMessage::user(format!(
            "Answer the question from these passages.\n\n{context}Question: {question}"
        ))],
        true,
    )?;
    let mut session = Session::new(
        model.clone(),
        SessionOptions {
            ctx: 2048,
            ..Default::default()
        },
    )?;
    let ids = model.tokenizer.encode(&prompt)?;
    let out = session.generate(
        &ids,
        &GenerateOptions {
            max_tokens: 64,
            ..Default::default()
        },
        |_, _| true,
    )?;
    println!("{}", out.text.trim());
    Ok(())
}
