// Adapter probe (not a model kernel): how fast can invocations stream words
// from a storage buffer? Each invocation XORs `per_lane` units (u32, or
// vec4<u32> with VEC4) either from its own contiguous span (LAYOUT 0, like a
// row-per-invocation matvec) or interleaved so neighbouring invocations read
// neighbouring units (LAYOUT 1, like a row-interleaved weight layout). The
// XOR keeps the loads alive without adding arithmetic worth timing.
#include "common/step.wgsl"

struct Params {
    lanes: u32,
    per_lane: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
#if VEC4
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
#else
@group(0) @binding(2) var<storage, read> w: array<u32>;
#endif
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let lane = gid.x;
    if (lane >= p.lanes || step.n_tokens == 0u) {
        return;
    }
#if VEC4
    var acc = vec4<u32>(0u);
#else
    var acc = 0u;
#endif
    for (var i = 0u; i < p.per_lane; i++) {
#if LAYOUT
        acc ^= w[i * p.lanes + lane];
#else
        acc ^= w[lane * p.per_lane + i];
#endif
    }
#if VEC4
    out[lane] = acc.x ^ acc.y ^ acc.z ^ acc.w;
#else
    out[lane] = acc;
#endif
}
