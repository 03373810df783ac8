// SnapKV's compaction of one layer's K or V cache: the rows of the slots
// each KV head keeps (ascending), gathered into a scratch buffer that the
// host then copies over the head's first slots. Rows are words of any
// storage type, so one kernel serves them all; gathering in place would
// race (a kept row can sit where another one lands).
#include "common/step.wgsl"

struct Params {
    row_words: u32,
    ctx: u32,
    n_keep: u32,
    n_kv_head: u32,
    idx_off: u32, // this layer's lists in `keep`
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> cache: array<u32>;
@group(0) @binding(3) var<storage, read> keep: array<u32>; // [n_layer, n_kv_head, n_keep]: slots kept
@group(0) @binding(4) var<storage, read_write> dst: array<u32>; // [n_kv_head, n_keep, row_words]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // Every kernel binds the step block; this one needs no field of it.
    _ = step.n_tokens;
    let i = gid.x + gid.y * nwg.x * 64u;
    let total = p.n_kv_head * p.n_keep * p.row_words;
    if (i >= total) {
        return;
    }
    let w = i % p.row_words;
    let r = i / p.row_words; // h * n_keep + k
    let h = r / p.n_keep;
    let slot = keep[p.idx_off + r];
    dst[i] = cache[(h * p.ctx + slot) * p.row_words + w];
}
