// Per-step values, written once before each submit and shared by every
// dispatch of the step, so bind groups can be built once per session.
struct Step {
    n_tokens: u32,  // tokens in this batch (1 for a decode step)
    pos0: u32,      // cache position of the first token of the batch
    kv_len: u32,    // pos0 + n_tokens: keys visible to the last token
    chunk_len: u32, // keys per attention split (flash-decoding)
    n_chunks: u32,  // attention splits per (token, head)
    rand_u: f32,    // uniform random number in [0, 1) for the sampler
    n_history: u32, // valid entries in the repetition-penalty history
    _pad: u32,
}
