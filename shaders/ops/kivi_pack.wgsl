// KIVI2 keys: when a batch fills a group of 32 token slots, each channel of
// the group is quantized over its 32 tokens (2-bit asymmetric, an f16
// (step, min) pair) from the f16 rows rope_kv left in the residual area.
// One invocation per (KV head, channel) for each group the batch completed.
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
@group(0) @binding(2) var<storage, read_write> kc: array<u32>;

var<private> xr: array<f32, 32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    let hd = p.head_dim;
    if (t >= step.n_tokens || i >= p.n_kv_head * hd) {
        return;
    }
    let slot = step.slot_base + (step.slot_off + t) % step.slot_mod;
    if (slot % 32u != 31u) {
        return;
    }
    let kvh = i / hd;
    let d = i % hd;
    let hb = kvh * kivi_head_words(hd, p.ctx);
    let rbase = hb + kivi_groups_words(hd, p.ctx);
    let g = slot / 32u;
    for (var j = 0u; j < 32u; j++) {
        let s = g * 32u + j;
        xr[j] = unpack2x16float(kc[rbase + (s % KIVI_RES) * (hd / 2u) + d / 2u])[d % 2u];
    }
    var lo = xr[0];
    var hi = xr[0];
    for (var j = 0u; j < 32u; j++) {
        lo = min(lo, xr[j]);
        hi = max(hi, xr[j]);
    }
    let dd = (hi - lo) / 3.0;
    let id = select(0.0, 1.0 / dd, dd != 0.0);
    var w0 = 0u;
    var w1 = 0u;
    for (var j = 0u; j < 32u; j++) {
        let q = u32(clamp(i32((xr[j] - lo) * id + 0.5), 0, 3));
        if (j < 16u) {
            w0 |= q << (2u * j);
        } else {
            w1 |= q << (2u * (j - 16u));
        }
    }
    let gb = hb + g * 3u * hd;
    kc[gb + d * 2u] = w0;
    kc[gb + d * 2u + 1u] = w1;
    kc[gb + 2u * hd + d] = pack2x16float(vec2<f32>(dd, lo));
}
