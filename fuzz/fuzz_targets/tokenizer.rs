//! The tokenizer a GGUF file describes (`tokenizer.ggml.*`): vocabulary,
//! merges, token types, special ids, the pre-tokenizer name. The input is
//! turned into those keys (structure-aware), written as a GGUF, read back,
//! and the tokenizer built from it encodes and decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: lottery_fuzz::TokInput| {
    lottery_fuzz::tokenizer(&input);
});
