// y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * g, one workgroup per token;
// with ACCUMULATE, y[t, :] += that (a norm before a residual add).
#include "common/step.wgsl"

struct Params {
    d: u32,
    eps: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>,
#if SUBGROUPS
        @builtin(subgroup_size) sg_size: u32,
        @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
        ) {
    let t = wg.y;
    if (t >= step.n_tokens) {
        return;
    }
    let o = t * p.d;
    var s = 0.0;
    for (var i = li; i < p.d; i += 256u) {
        let v = x[o + i];
        s += v * v;
    }
#if SUBGROUPS
    let part = subgroupAdd(s);
    if (sg_lane == 0u) {
        red[li / sg_size] = part;
    }
    workgroupBarrier();
    if (li == 0u) {
        var total = 0.0;
        for (var i = 0u; i < 256u / sg_size; i++) {
            total += red[i];
        }
        red[0] = total;
    }
    workgroupBarrier();
#else
    red[li] = s;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if (li < k) {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
#endif
    let inv = inverseSqrt(red[0] / f32(p.d) + p.eps);
    for (var i = li; i < p.d; i += 256u) {
#if ACCUMULATE
        y[o + i] += x[o + i] * inv * g[i];
#else
        y[o + i] = x[o + i] * inv * g[i];
#endif
    }
}
