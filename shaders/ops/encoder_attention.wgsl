// Bidirectional attention for a padded batch of sequences (an encoder such
// as BERT): token t of sequence s = t / L attends to the first len[s] tokens
// of s, every one of them, before and after it. One invocation per
// (token, head), barrier-free: q and the output row stay in registers, and
// the softmax takes two passes over the keys (max, then exp-sum and the
// weighted values) like the reference, so no running rescale is needed.
// Padding tokens get zeros; pooling skips them anyway.
#include "common/step.wgsl"

struct Params {
    n_head: u32,
    head_dim: u32,
    scale: f32, // 1 / sqrt(head_dim)
    _p0: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> qkv: array<f32>; // [n_tokens, 3 * n_head * head_dim]: q | k | v
@group(0) @binding(3) var<storage, read> seq: array<u32>; // [n_seq, L, len_0, len_1, ...]
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // [n_tokens, n_head * head_dim]

const MAX_HD: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let t = wg.y * 64u + li;
    if (t >= step.n_tokens) {
        return;
    }
    let hd = p.head_dim;
    let d = p.n_head * hd;
    let seq_len = seq[1];
    let s = t / seq_len;
    let o = t * d + h * hd;
    var n = 0u;
    if (s < seq[0]) {
        n = min(seq[2u + s], seq_len);
    }
    if (t - s * seq_len >= n) {
        for (var i = 0u; i < hd; i++) {
            out[o + i] = 0.0;
        }
        return;
    }
    var q: array<f32, MAX_HD>;
    var acc: array<f32, MAX_HD>;
    for (var i = 0u; i < hd; i++) {
        q[i] = qkv[t * 3u * d + h * hd + i] * p.scale;
        acc[i] = 0.0;
    }
    let k0 = s * seq_len;
    var m = -3.0e38;
    for (var j = 0u; j < n; j++) {
        let kr = (k0 + j) * 3u * d + d + h * hd;
        var dotv = 0.0;
        for (var i = 0u; i < hd; i++) {
            dotv += q[i] * qkv[kr + i];
        }
        m = max(m, dotv);
    }
    var l = 0.0;
    for (var j = 0u; j < n; j++) {
        let kr = (k0 + j) * 3u * d + d + h * hd;
        var dotv = 0.0;
        for (var i = 0u; i < hd; i++) {
            dotv += q[i] * qkv[kr + i];
        }
        let e = exp(dotv - m);
        l += e;
        let vr = kr + d;
        for (var i = 0u; i < hd; i++) {
            acc[i] += e * qkv[vr + i];
        }
    }
    let inv = 1.0 / l;
    for (var i = 0u; i < hd; i++) {
        out[o + i] = acc[i] * inv;
    }
}
