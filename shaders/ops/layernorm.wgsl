// y[t, :] = LayerNorm((x[t, :] + b) + r[t, :]) * g + beta: the post-norm of an
// encoder layer (x: a projection without its bias, b: that bias, r: the
// residual) and of BERT's embeddings (word + token type + position).
// One invocation per token: no workgroup memory and no barriers (a barrier
// is a coroutine switch on CPU adapters), and the mean and variance are two
// passes like the reference, not E[x^2] - E[x]^2, which cancels badly.
#include "common/step.wgsl"

struct Params {
    d: u32,
    eps: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> r: array<f32>;
@group(0) @binding(5) var<storage, read> g: array<f32>;
@group(0) @binding(6) var<storage, read> beta: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let t = wg.y * 64u + li;
    if (t >= step.n_tokens) {
        return;
    }
    let o = t * p.d;
    var s = 0.0;
    for (var i = 0u; i < p.d; i++) {
        let v = (x[o + i] + b[i]) + r[o + i];
        y[o + i] = v;
        s += v;
    }
    let mean = s / f32(p.d);
    var q = 0.0;
    for (var i = 0u; i < p.d; i++) {
        let c = y[o + i] - mean;
        q += c * c;
    }
    let inv = inverseSqrt(q / f32(p.d) + p.eps);
    for (var i = 0u; i < p.d; i++) {
        y[o + i] = (y[o + i] - mean) * inv * g[i] + beta[i];
    }
}
