//! lottery-models: everything that knows what a model is: file formats,
//! tokenizers, chat templates, architectures and generation.

pub mod arch;
pub mod constrain;
pub mod error;
pub mod eval;
pub mod generate;
pub mod gptq;
pub mod kb;
pub mod load;
pub mod model;
pub mod prune;
pub mod quantize;
pub mod runtime;

pub use error::{Error, Result};
pub use generate::{
    GenerateOptions, Generation, HookAction, SamplerSettings, Session, SessionOptions, StopReason,
    TokenEvent,
};
pub use model::Model;
