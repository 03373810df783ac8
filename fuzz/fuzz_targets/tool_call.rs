//! The tool-call parsers: an action as the model writes it (JSON naming a
//! tool and its arguments) run against the built-in calculator and memory,
//! and the inline `<<EXPR=` call style.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lottery_fuzz::tool_call(data);
});
