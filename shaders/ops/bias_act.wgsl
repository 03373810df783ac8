// x[t, i] = act(x[t, i] + b[i]) in place, for i < n: a projection's bias with
// an optional GELU (the erf form BERT uses, not the tanh approximation).
#include "common/step.wgsl"

struct Params {
    n: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

// erfc for z >= 0 with fractional error below 1.2e-7 everywhere (the
// Chebyshev-fitted exponential of Numerical Recipes' erfcc); WGSL has no erf.
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(poly);
}

fn gelu(v: f32) -> f32 {
    // 0.5 v (1 + erf(v / sqrt 2)), written with erfc so both tails keep
    // their precision: for v < 0 it is 0.5 v erfc(|v| / sqrt 2).
    let z = abs(v) * 0.70710678118654752;
    let c = erfc_pos(z);
    if (v >= 0.0) {
        return 0.5 * v * (2.0 - c);
    }
    return 0.5 * v * c;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= p.n || t >= step.n_tokens) {
        return;
    }
    let o = t * p.n + i;
    let v = x[o] + b[i];
#if GELU
    x[o] = gelu(v);
#else
    x[o] = v;
#endif
}
