// Per-head RMSNorm of the queries and keys, in place, before rotation
// (Qwen3's q_norm and k_norm): a token's row of qkv is [q heads | k heads |
// v heads], each head_dim wide; the q heads share g[0..hd], the k heads
// g[hd..2 hd]. One invocation per (head, token): a head is short, and a
// barrier-free loop beats a workgroup reduction on CPU adapters while a
// GPU still gets n_tokens * heads invocations.
#include "common/step.wgsl"

struct Params {
    hd: u32,
    nq: u32,
    nkv: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> qkv: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let h = gid.x;
    let t = gid.y;
    if (h >= p.nq + p.nkv || t >= step.n_tokens) {
        return;
    }
    let o = (t * (p.nq + 2u * p.nkv) + h) * p.hd;
    let w = select(p.hd, 0u, h < p.nq);
    var s = 0.0;
    for (var i = 0u; i < p.hd; i++) {
        let v = qkv[o + i];
        s += v * v;
    }
    let inv = inverseSqrt(s / f32(p.hd) + p.eps);
    for (var i = 0u; i < p.hd; i++) {
        qkv[o + i] = qkv[o + i] * inv * g[w + i];
    }
}
