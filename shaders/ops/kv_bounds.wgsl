// Quest's page summaries: per (KV head, page of `page` slots, dim) the
// elementwise min and max of the stored keys (as attention reads them, so
// turned by H when the keys are). One invocation per (head, dim) for each
// page the batch touched, rebuilt from the whole page: cheap, and right
// after a rewind. Slots holding positions past the batch are stale.
#include "common/step.wgsl"

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    ctx: u32,
    page: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
#include "common/kv_read.wgsl"
@group(0) @binding(7) var<storage, read_write> bounds: array<f32>; // [n_kv_head, ctx / page, 2, head_dim]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    let hd = p.head_dim;
    if (t >= step.n_tokens || i >= p.n_kv_head * hd) {
        return;
    }
    let slot = step.slot_base + (step.slot_off + t) % step.slot_mod;
    if (t != 0u && slot % p.page != 0u) {
        return;
    }
    let kvh = i / hd;
    let d = i % hd;
    let pg = slot / p.page;
    let last = step.pos0 + step.n_tokens - 1u;
    var lo = 3.0e38;
    var hi = -3.0e38;
    let s1 = min(pg * p.page + p.page, p.ctx);
    for (var s = pg * p.page; s < s1; s++) {
        if (kv_pos[s] <= last) {
            let x = k_at(kvh * p.ctx + s, d);
            lo = min(lo, x);
            hi = max(hi, x);
        }
    }
    let max_pages = (p.ctx + p.page - 1u) / p.page;
    let o = (kvh * max_pages + pg) * 2u * hd + d;
    bounds[o] = lo;
    bounds[o + hd] = hi;
}
