// Sentence embeddings of a padded batch: out[s, :] = mean of x over the first
// len[s] tokens of sequence s, then (NORMALIZE) scaled to unit L2 norm.
// One invocation per sequence, barrier-free; the batch is small (its tokens
// already ran through the whole encoder) so the serial loops are cheap, and
// sums run in the reference's order.
#include "common/step.wgsl"

struct Params {
    d: u32,
    normalize: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>; // [n_tokens, d]
@group(0) @binding(3) var<storage, read> seq: array<u32>; // [n_seq, L, len_0, len_1, ...]
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // [n_seq, d]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = gid.x;
    let seq_len = seq[1];
    // Sequences past the batch's tokens are stale entries of a larger batch.
    if (s >= seq[0] || s * seq_len >= step.n_tokens) {
        return;
    }
    let n = min(seq[2u + s], seq_len);
    let o = s * p.d;
    let x0 = s * seq_len * p.d;
    var ss = 0.0;
    for (var i = 0u; i < p.d; i++) {
        var a = 0.0;
        for (var j = 0u; j < n; j++) {
            a += x[x0 + j * p.d + i];
        }
        let v = a / max(f32(n), 1.0);
        out[o + i] = v;
        ss += v * v;
    }
    if (p.normalize != 0u) {
        // torch.nn.functional.normalize: x / max(||x||, 1e-12)
        let inv = 1.0 / max(sqrt(ss), 1e-12);
        for (var i = 0u; i < p.d; i++) {
            out[o + i] = out[o + i] * inv;
        }
    }
}
