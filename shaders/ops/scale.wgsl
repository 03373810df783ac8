// x[t, i] *= s in place, for i < n (Gemma scales its embeddings by sqrt(d)).
#include "common/step.wgsl"

struct Params {
    n: u32,
    s: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= p.n || t >= step.n_tokens) {
        return;
    }
    x[t * p.n + i] *= p.s;
}
