// Quest's page choice for a decode step, one workgroup per query head (as
// in the paper: heads sharing a KV head still choose their own pages): each
// earlier page (not the first, not the current) gets an upper bound of the
// score any of its keys can reach for this head's query,
// sum_d max(q_d min_d, q_d max_d); the `top` best (ties to the lower page)
// join the first and the current page in the head's page list that
// attention visits. Ranks are counted in parallel, no sort.
#include "common/step.wgsl"

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    ctx: u32,
    page: u32,
    top: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> qkv: array<f32>; // the decode token's row (q turned like the keys)
@group(0) @binding(3) var<storage, read> bounds: array<f32>; // [n_kv_head, ctx / page, 2, head_dim]
@group(0) @binding(4) var<storage, read_write> pages: array<u32>; // [n_head, ctx]

const MAX_PAGES: u32 = 2048u;
var<workgroup> score: array<f32, MAX_PAGES>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let hd = p.head_dim;
    let kvh = h / (p.n_head / p.n_kv_head);
    let max_pages = (p.ctx + p.page - 1u) / p.page;
    let cur = step.pos0 / p.page;
    for (var pg = 1u + li; pg < cur; pg += 64u) {
        let o = (kvh * max_pages + pg) * 2u * hd;
        let q0 = h * hd;
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            let q = qkv[q0 + d];
            s += max(q * bounds[o + d], q * bounds[o + hd + d]);
        }
        score[pg] = s;
    }
    workgroupBarrier();
    let base = h * p.ctx;
    if (li == 0u) {
        pages[base] = 0u;
        pages[base + p.top + 1u] = cur;
    }
    for (var pg = 1u + li; pg < cur; pg += 64u) {
        let s = score[pg];
        var rank = 0u;
        for (var j = 1u; j < cur && rank < p.top; j++) {
            let o = score[j];
            if (o > s || (o == s && j < pg)) {
                rank++;
            }
        }
        if (rank < p.top) {
            pages[base + 1u + rank] = pg;
        }
    }
}
