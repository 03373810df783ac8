//! The crate's one error type.
//!
//! Every message names the thing that was wrong (metadata key, tensor name,
//! byte offset, limit) so that a user with a broken model file can tell what
//! to fix without a debugger.

use std::path::PathBuf;

/// Errors from loading, tokenising and templating models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or mapping a file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The GGUF container is malformed. `offset` is the byte offset in the
    /// file where the problem was found; `msg` names the key or tensor.
    #[error("invalid GGUF{}: {msg} (at byte offset {offset})", fmt_path(path))]
    Gguf {
        /// Set when the file was opened from a path.
        path: Option<PathBuf>,
        offset: u64,
        msg: String,
    },

    /// A tensor uses a ggml type id this crate does not know.
    #[error("tensor '{name}' has unsupported ggml type id {ggml_type}")]
    UnsupportedTensorType { name: String, ggml_type: u32 },

    /// A required metadata key is absent.
    #[error("missing metadata key '{key}'")]
    MissingKey { key: String },

    /// A metadata key exists but holds a value of another type (or one out of
    /// range for the requested type).
    #[error("metadata key '{key}' should be {expected}, found {found}")]
    KeyType {
        key: String,
        expected: &'static str,
        found: String,
    },

    /// A tensor the architecture needs is absent.
    #[error("missing tensor '{name}'")]
    MissingTensor { name: String },

    /// The file holds tensors the forward would not read: running without
    /// them would give wrong results silently.
    #[error("the file holds {count} tensor(s) the `{arch}` forward does not use: {names}; running without them would give wrong results, so the model is refused (its family is not implemented)")]
    UnexpectedTensors {
        arch: String,
        count: usize,
        names: String,
    },

    /// A metadata key (or config.json entry) asks for math we do not
    /// implement (rope scaling, soft-capping, partial rotary, ...).
    #[error("metadata `{key}` = {value}: {why}; the model is refused rather than run wrong")]
    UnsupportedMetadata {
        key: String,
        value: String,
        why: String,
    },

    /// A tensor has the wrong shape for the architecture.
    #[error("tensor '{name}' has shape {got}, expected {expected}")]
    ShapeMismatch {
        name: String,
        expected: String,
        got: String,
    },

    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Compiling or rendering a chat template failed.
    #[error("chat template: {0}")]
    Template(String),

    /// Anything else about the model (free-form; name the tensor / key).
    #[error("{0}")]
    Model(String),

    /// One of several inputs (texts to embed, files to index) is unusable.
    #[error("input {index}: {msg}")]
    Input { index: usize, msg: String },

    /// A prompt or generation that does not fit the session's context.
    #[error("context full: {in_cache} tokens in the cache + {new} new exceed the context of {ctx} (raise --ctx, up to the model's {ctx_train}, or shorten the prompt)")]
    ContextFull {
        in_cache: usize,
        new: usize,
        ctx: usize,
        ctx_train: usize,
    },
    /// A GPU-side failure (no adapter, limits, shader validation).
    #[error(transparent)]
    Engine(#[from] lottery_engine::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn fmt_path(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" file {}", p.display()),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn gguf(offset: u64, msg: impl Into<String>) -> Self {
        Error::Gguf {
            path: None,
            offset,
            msg: msg.into(),
        }
    }

    /// Attaches a file path to a GGUF error that was produced while parsing
    /// bytes (the parser itself does not know where the bytes came from).
    pub(crate) fn with_path(self, p: &std::path::Path) -> Self {
        match self {
            Error::Gguf {
                path: None,
                offset,
                msg,
            } => Error::Gguf {
                path: Some(p.to_path_buf()),
                offset,
                msg,
            },
            other => other,
        }
    }
}
