//! A Hugging Face model directory: config.json, model.safetensors (its
//! header and data offsets) and, when present, model.safetensors.index.json
//! with a second shard. The input is those files separated by a marker line,
//! so mutations keep the split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Four small files are written per execution: memory-backed /dev/shm
        // where there is one.
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("lottery-fuzz-hf-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    lottery_fuzz::hf_dir(data, dir());
});
