// The key mean of centred caches (engine/src/kv: KvTypes::centre): at a
// batch that starts the cache (pos0 0), per (KV head, channel) the mean of
// the batch's keys after RoPE over tokens 1.. (position 0 is an attention
// sink, unlike the rest), written after the K cache's rows for rope_kv to
// subtract. Any vector would keep attention exact; this one takes away the
// part every key shares, so blocks are scaled to what tells keys apart.
// One invocation per rotation pair, summing tokens in order
// (engine/src/kv: KvTypes::key_centre, bit for bit up to fused multiplies).
#include "common/step.wgsl"
#include "common/kv_types.wgsl"

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    ctx: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> rope: array<vec2<f32>>; // [ctx, head_dim / 2] (cos, sin)
@group(0) @binding(3) var<storage, read> qkv: array<f32>; // [n_tokens, (n_head + 2 n_kv_head) * head_dim]
@group(0) @binding(4) var<storage, read_write> kc: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half_dim = p.head_dim / 2u;
    let i = gid.x;
    if (step.pos0 != 0u || i >= p.n_kv_head * half_dim) {
        return;
    }
    let h = i / half_dim;
    let j = i % half_dim;
    let width = (p.n_head + 2u * p.n_kv_head) * p.head_dim;
    let src = (p.n_head + h) * p.head_dim + 2u * j;
    var sa = 0.0;
    var sb = 0.0;
    for (var t = 1u; t < step.n_tokens; t++) {
        let cs = rope[t * half_dim + j];
        let a = qkv[t * width + src];
        let b = qkv[t * width + src + 1u];
        sa += a * cs.x - b * cs.y;
        sb += a * cs.y + b * cs.x;
    }
    var ma = 0.0;
    var mb = 0.0;
    if (step.n_tokens >= 2u) {
        let n = f32(step.n_tokens - 1u);
        ma = sa / n;
        mb = sb / n;
    }
    let base = p.n_kv_head * p.ctx * kv_row_words(K_TYPE, p.head_dim) + h * p.head_dim + 2u * j;
    kc[base] = bitcast<u32>(ma);
    kc[base + 1u] = bitcast<u32>(mb);
}
