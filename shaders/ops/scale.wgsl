// x[t, i] *= s in place, for i < n (Gemma scales its embeddings by sqrt(d));
// with SOFTCAP, x = s * tanh(x / s) (Gemma 2's final logits). Rows past
// `rows` are left alone: the sampled path's logits hold one row whatever
// the batch.
#include "common/step.wgsl"

struct Params {
    n: u32,
    s: f32,
    rows: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= p.n || t >= step.n_tokens || t >= p.rows) {
        return;
    }
#if SOFTCAP
    let v = x[t * p.n + i];
    x[t * p.n + i] = p.s * (1.0 - 2.0 / (exp(2.0 * v / p.s) + 1.0));
#else
    x[t * p.n + i] *= p.s;
#endif
}
