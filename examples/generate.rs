//! Streaming generation with the default model:
//!   cargo run --release --example generate -- "Once upon a time" 48
use lottery::{GenerateOptions, Gpu, GpuOptions, Model, SamplerSettings, Session, SessionOptions};
use std::io::Write;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let prompt = args.next().unwrap_or_else(|| "Once upon a time".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(48);
    let path = lottery::default_model_path()
        .ok_or_else(|| anyhow::anyhow!("run scripts/fetch-model.sh (or set LOTTERY_MODEL)"))?;
    let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
    let model = Arc::new(Model::load(gpu, &path, &mut |_, _| {})?);
    let mut session = Session::new(model.clone(), SessionOptions::default())?;
    let ids = model.tokenizer.encode(&prompt)?;
    let opts = GenerateOptions {
        max_tokens: n,
        sampler: SamplerSettings {
            temperature: 0.8,
            top_p: 0.95,
            seed: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    print!("{prompt}");
    let out = session.generate(&ids, &opts, |_, piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
        true
    })?;
    println!();
    eprintln!(
        "[{} tokens, {:.1} tokens/s]",
        out.ids.len(),
        out.decode_tokens_per_s()
    );
    Ok(())
}
