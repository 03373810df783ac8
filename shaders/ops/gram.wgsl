// g[i, j] += sum over the batch's tokens of x[t, i] * x[t, j]: the Gram
// matrix X^T X of a projection's inputs, which SparseGPT's reconstruction
// needs (calibration runs only). Each invocation owns a 4 x 4 tile, with no
// workgroup memory, so CPU adapters run it without barriers.
#include "common/step.wgsl"

struct Params {
    k: u32,      // channels
    stride: u32, // floats between tokens in x
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;

fn four(b: u32, c0: u32) -> vec4<f32> {
    // Past the last channel, repeat it; those entries are never stored.
    let l = p.k - 1u;
    return vec4<f32>(x[b + min(c0, l)], x[b + min(c0 + 1u, l)],
                     x[b + min(c0 + 2u, l)], x[b + min(c0 + 3u, l)]);
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = gid.x * 4u;
    let j0 = gid.y * 4u;
    if (i0 >= p.k || j0 >= p.k) {
        return;
    }
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var t = 0u; t < step.n_tokens; t++) {
        let b = t * p.stride;
        let xi = four(b, i0);
        let xj = four(b, j0);
        a0 += xi.x * xj;
        a1 += xi.y * xj;
        a2 += xi.z * xj;
        a3 += xi.w * xj;
    }
    for (var r = 0u; r < 4u; r++) {
        let i = i0 + r;
        if (i >= p.k) {
            break;
        }
        var v = a0;
        if (r == 1u) { v = a1; }
        if (r == 2u) { v = a2; }
        if (r == 3u) { v = a3; }
        for (var c = 0u; c < 4u; c++) {
            if (j0 + c < p.k) {
                g[i * p.k + j0 + c] += v[c];
            }
        }
    }
}
