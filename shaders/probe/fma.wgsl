// Adapter probe (not a model kernel): peak f32 multiply-add rate with no
// memory traffic. Eight independent accumulators per invocation hide the
// FMA latency; the result is written so nothing is optimised away.
#include "common/step.wgsl"

struct Params {
    iters: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = f32(gid.x % 7u) * 1e-3 + f32(step.n_tokens) * 1e-6;
    let b = 0.999 + x;
    var a0 = x; var a1 = x + 0.1; var a2 = x + 0.2; var a3 = x + 0.3;
    var a4 = x + 0.4; var a5 = x + 0.5; var a6 = x + 0.6; var a7 = x + 0.7;
    for (var i = 0u; i < p.iters; i++) {
        a0 = fma(a0, b, 1e-3); a1 = fma(a1, b, 1e-3); a2 = fma(a2, b, 1e-3); a3 = fma(a3, b, 1e-3);
        a4 = fma(a4, b, 1e-3); a5 = fma(a5, b, 1e-3); a6 = fma(a6, b, 1e-3); a7 = fma(a7, b, 1e-3);
    }
    out[gid.x] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}
