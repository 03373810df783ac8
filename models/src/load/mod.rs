//! Reading model files: the GGUF container, tokenizers and chat templates.

pub mod chat;
pub mod gguf;
pub mod hf;
pub mod sparse;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, TemplateLimits};
pub use gguf::{GgmlType, GgufFile, GgufWriter, MetaType, MetaValue, TensorInfo};
pub use tokenizer::{StreamDecoder, Tokenizer};

#[cfg(test)]
mod tests {
    /// Sessions, servers and the browser build move these across threads.
    #[test]
    fn loaded_things_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::GgufFile>();
        check::<super::Tokenizer>();
        check::<super::StreamDecoder>();
        check::<super::ChatTemplate>();
    }
}
