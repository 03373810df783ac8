//! Generation: the session (prefill/decode over one KV cache), sampling
//! settings, stop rules and streaming text.

pub mod session;

pub use session::{Session, SessionOptions, StepProfile};

/// How the next token is chosen. `temperature == 0` is greedy.
#[derive(Clone, Debug)]
pub struct SamplerSettings {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        SamplerSettings {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// What to generate and when to stop.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerSettings,
    /// Stop when the text contains one of these (the stop string is not returned).
    pub stop: Vec<String>,
    /// Stop at the end-of-sequence token(s).
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            sampler: SamplerSettings::default(),
            stop: Vec::new(),
            stop_at_eos: true,
        }
    }
}

/// What a generation hook sees for each token: sampled ones, and tokens a
/// tool injected (`injected`), with the text so far (injections included).
#[derive(Clone, Copy, Debug)]
pub struct TokenEvent<'a> {
    pub id: u32,
    /// Text this token completed (may be empty mid-character).
    pub piece: &'a str,
    /// All generated text so far, this piece included.
    pub text: &'a str,
    pub injected: bool,
}

/// A hook's answer: go on, stop, or feed this text through the cache as if
/// the model had written it (a tool result) and go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookAction {
    Continue,
    Stop,
    Inject(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    Eos,
    StopString,
    /// The per-token callback asked to stop.
    Callback,
    /// The grammar constraining the output is complete.
    Grammar,
}

/// The result of [`Session::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    /// Every token after the prompt: sampled and injected.
    pub ids: Vec<u32>,
    /// How many of `ids` a hook injected (they do not count toward `max_tokens`).
    pub injected: usize,
    pub text: String,
    pub stop: StopReason,
    /// Seconds from the call to the first generated token (prefill + first sample).
    pub ttft_s: f64,
    /// Seconds spent in decode steps after the first token.
    pub decode_s: f64,
}

impl Generation {
    pub fn decode_tokens_per_s(&self) -> f64 {
        let n = (self.ids.len() - self.injected).saturating_sub(1);
        if self.decode_s > 0.0 {
            n as f64 / self.decode_s
        } else {
            0.0
        }
    }
    pub fn prefill_tokens_per_s(&self) -> f64 {
        if self.ttft_s > 0.0 {
            self.prompt_ids.len() as f64 / self.ttft_s
        } else {
            0.0
        }
    }
}
