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
    masked: u32,    // 1: the sampler keeps only the ids set in its mask (a grammar is on)
    slot_base: u32,  // cache slot of batch token t: slot_base + (slot_off + t) % slot_mod
    slot_off: u32,
    slot_mod: u32,
    n_visit: u32,    // slots attention visits, through the page list
    visit_base: u32, // in-order slots: token t needs none past visit_base + t
    sink: u32,       // mask besides causality: keep k < sink or k + window > q
    window: u32,     // 0: no window
    page: u32,       // slots per page-list entry
}
