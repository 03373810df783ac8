mod cli;

fn main() {
    // RUST_LOG=wgpu_hal=debug (say) shows what the driver said, for reports
    // of adapters that fail to start.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    if let Err(e) = cli::main() {
        // Print the chain, skipping causes a message already quotes.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg = format!("{msg}: {c}");
            }
        }
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
