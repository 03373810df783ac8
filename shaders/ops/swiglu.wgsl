// h[t, i] = act(gu[t, i]) * gu[t, ff + i], where gu holds the fused gate and
// up projections side by side: [n_tokens, 2 * ff]; act is SiLU (SwiGLU) or,
// with GELU_TANH, the tanh form of GELU (GeGLU, Gemma).
#include "common/step.wgsl"
#include "common/gate_act.wgsl"

struct Params {
    ff: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> gu: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= p.ff || t >= step.n_tokens) {
        return;
    }
    let g = gu[t * 2u * p.ff + i];
    let u = gu[t * 2u * p.ff + p.ff + i];
    h[t * p.ff + i] = gate_act(g) * u;
}
