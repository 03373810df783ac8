// Merges the per-chunk partial attention results of each (head, token):
// out = sum_c exp(m_c - M) acc_c / sum_c exp(m_c - M) l_c.
#include "common/step.wgsl"
#include "common/kv_types.wgsl"

struct Params {
    n_head: u32,
    head_dim: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> part: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [n_tokens, n_head * head_dim]

const MAX_HD: u32 = 256u;
var<workgroup> merged: array<f32, MAX_HD>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let t = wg.y;
    let hd = p.head_dim;
    let stride = hd + 2u;
    let base = (t * p.n_head + h) * step.n_chunks * stride;
    var mx = -3.0e38;
    for (var c = 0u; c < step.n_chunks; c++) {
        mx = max(mx, part[base + c * stride]);
    }
    var l = 0.0;
    for (var c = 0u; c < step.n_chunks; c++) {
        let o = base + c * stride;
        l += exp(part[o] - mx) * part[o + 1u];
    }
    for (var d = li; d < hd; d += 64u) {
        var a = 0.0;
        for (var c = 0u; c < step.n_chunks; c++) {
            let o = base + c * stride;
            a += exp(part[o] - mx) * part[o + 2u + d];
        }
        if (V_ROT) {
            merged[d] = a / l;
        } else {
            out[(t * p.n_head + h) * hd + d] = a / l;
        }
    }
    if (V_ROT) {
        // Values were stored turned by H: turn the output back.
        workgroupBarrier();
        for (var d = li; d < hd; d += 64u) {
            var a = 0.0;
            for (var j = 0u; j < hd; j++) {
                a += select(merged[j], -merged[j], had_odd(d, j));
            }
            out[(t * p.n_head + h) * hd + d] = a * ROT_SCALE;
        }
    }
}
