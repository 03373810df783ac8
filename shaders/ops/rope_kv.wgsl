// Rotary embedding on the fused QKV activations of a batch, and the append of
// K and V to the cache: q is rotated in place, k is rotated on its way into
// the cache, v is copied. Rotation pairs are adjacent (x[2j], x[2j+1]), the
// GGUF convention for Llama (the converter permutes Q/K rows to match).
// cos/sin come from a table built on the host in f64, because GPU sin/cos are
// only accurate near zero and positions reach thousands of radians.
#include "common/step.wgsl"

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    ctx: u32, // cache capacity in positions
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> rope: array<vec2<f32>>; // [ctx, head_dim / 2] (cos, sin)
@group(0) @binding(3) var<storage, read_write> qkv: array<f32>; // [n_tokens, (n_head + 2 n_kv_head) * head_dim]
// [n_kv_head, ctx, head_dim] as f16 pairs (KV_F16) or f32 bits. The f16 tier
// declares the same bytes as vec2<f16>; the portable tier packs into u32.
#if KV_F16
#if NATIVE_F16
@group(0) @binding(4) var<storage, read_write> kc: array<vec2<f16>>;
@group(0) @binding(5) var<storage, read_write> vc: array<vec2<f16>>;
#else
@group(0) @binding(4) var<storage, read_write> kc: array<u32>;
@group(0) @binding(5) var<storage, read_write> vc: array<u32>;
#endif
#else
@group(0) @binding(4) var<storage, read_write> kc: array<u32>;
@group(0) @binding(5) var<storage, read_write> vc: array<u32>;
#endif

fn store_pair(is_k: bool, kvh: u32, pos: u32, j: u32, a: f32, b: f32) {
    let slot = (kvh * p.ctx + pos) * p.head_dim;
#if KV_F16
#if NATIVE_F16
    let v = vec2<f16>(vec2<f32>(a, b));
#else
    let v = pack2x16float(vec2<f32>(a, b));
#endif
    if (is_k) { kc[slot / 2u + j] = v; } else { vc[slot / 2u + j] = v; }
#else
    if (is_k) {
        kc[slot + 2u * j] = bitcast<u32>(a);
        kc[slot + 2u * j + 1u] = bitcast<u32>(b);
    } else {
        vc[slot + 2u * j] = bitcast<u32>(a);
        vc[slot + 2u * j + 1u] = bitcast<u32>(b);
    }
#endif
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    let half_dim = p.head_dim / 2u;
    let nq = p.n_head * half_dim;
    let nk = p.n_kv_head * half_dim;
    if (t >= step.n_tokens || i >= nq + 2u * nk) {
        return;
    }
    let pos = step.pos0 + t;
    let row = t * (p.n_head + 2u * p.n_kv_head) * p.head_dim;
    let cs = rope[pos * half_dim + i % half_dim];
    if (i < nq) {
        let o = row + 2u * i;
        let a = qkv[o];
        let b = qkv[o + 1u];
        qkv[o] = a * cs.x - b * cs.y;
        qkv[o + 1u] = a * cs.y + b * cs.x;
    } else if (i < nq + nk) {
        let ik = i - nq;
        let o = row + 2u * nq + 2u * ik;
        let a = qkv[o];
        let b = qkv[o + 1u];
        store_pair(true, ik / half_dim, pos, ik % half_dim, a * cs.x - b * cs.y, a * cs.y + b * cs.x);
    } else {
        let iv = i - nq - nk;
        let o = row + 2u * (nq + nk) + 2u * iv;
        store_pair(false, iv / half_dim, pos, iv % half_dim, qkv[o], qkv[o + 1u]);
    }
}
