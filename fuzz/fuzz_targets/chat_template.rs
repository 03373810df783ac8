//! Chat template rendering: the template source is the input; it renders a
//! small conversation with tools, as a chat turn does. Every render is
//! bounded by the template limits (fuel and output size), so a hang or an
//! out-of-memory here is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lottery_fuzz::chat_template(data);
});
