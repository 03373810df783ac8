//! A conversation through the model's chat template. Each turn re-renders the
//! whole conversation; the session keeps the cached prefix and feeds only the
//! new part, so earlier turns are never run again.
//!   cargo run --release --example chat -- "What is the capital of France?" "And of Italy?"
use lottery::{ChatMessage, GenerateOptions, Gpu, GpuOptions, Model, Session, SessionOptions};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let mut questions: Vec<String> = std::env::args().skip(1).collect();
    if questions.is_empty() {
        questions = vec![
            "What is the capital of France?".into(),
            "And what is it famous for?".into(),
        ];
    }
    let path = lottery::default_model_path()
        .ok_or_else(|| anyhow::anyhow!("run scripts/fetch-model.sh (or set LOTTERY_MODEL)"))?;
    let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
    let model = Arc::new(Model::load(gpu, &path, &mut |_, _| {})?);
    let template = model
        .chat_template
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("this model has no chat template"))?;
    let mut session = Session::new(model.clone(), SessionOptions::default())?;
    let mut messages = vec![ChatMessage::system(
        "You are a helpful assistant. Answer briefly.",
    )];
    let opts = GenerateOptions {
        max_tokens: 48,
        ..Default::default()
    };
    for q in questions {
        messages.push(ChatMessage::user(q.clone()));
        let ids = model.tokenizer.encode(&template.render(&messages, true)?)?;
        // Reuse what the cache already holds: the conversation so far.
        let keep = session.rewind_to_prefix(&ids)?;
        let out = session.generate(&ids[keep..], &opts, |_, _| true)?;
        println!("> {q}\n{}\n", out.text.trim());
        messages.push(ChatMessage::assistant(out.text.trim().to_string()));
    }
    Ok(())
}
