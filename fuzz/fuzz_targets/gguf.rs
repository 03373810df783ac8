//! A model file as `lottery info` / `lottery run` read it before the GPU:
//! the GGUF header, metadata, tensor infos and data offsets; the config and
//! the refusal checks; and every tensor decoded on the CPU and repacked into
//! GPU words (the tokenizer and the chat template have targets of their own).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lottery_fuzz::gguf(data);
});
