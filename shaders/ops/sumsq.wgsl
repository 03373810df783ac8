// stats[i] += sum over the batch's tokens of x[t, i]^2: per-channel
// activation energy for activation-aware quantization (calibration runs only).
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
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.k) {
        return;
    }
    var s = 0.0;
    for (var t = 0u; t < step.n_tokens; t++) {
        let v = x[t * p.stride + i];
        s += v * v;
    }
    stats[i] += s;
}
