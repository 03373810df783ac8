// Y[t, n] (+)= sum_k W[n, k] * X[t, k] for a batch (prefill) with no
// workgroup memory or barriers: each invocation computes a register tile of
// 4 rows x 4 tokens (16 invocations, 64 rows per workgroup). The CPU-adapter
// twin of matmul.wgsl (see matvec_rows.wgsl): every weight unit is decoded
// once for 4 tokens and every x value serves 4 rows.
//
// With subgroups (SUBGROUPS), x is loaded once per subgroup, not once per
// lane: every lane needs the same x, and llvmpipe turns each storage load
// into a per-lane gather, so lane l of a group of 32 columns loads one vec4
// and subgroupBroadcast (a register extract) hands it to the others. Needs
// a subgroup size of at least 8 and k a multiple of 32 (the host checks).
#include "common/proj.wgsl"

const LANES: u32 = 16u;
const TT: u32 = 4u;

fn dot8(w0: vec4<f32>, w1: vec4<f32>, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    return dot(w0, xa) + dot(w1, xb);
}

// Column t: token t's sums for the 4 rows' units over one unit of columns.
fn tile(w0: Unit, w1: Unit, w2: Unit, w3: Unit,
        x0a: vec4<f32>, x0b: vec4<f32>, x1a: vec4<f32>, x1b: vec4<f32>,
        x2a: vec4<f32>, x2b: vec4<f32>, x3a: vec4<f32>, x3b: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        vec4<f32>(dot8(w0.w0, w0.w1, x0a, x0b), dot8(w1.w0, w1.w1, x0a, x0b),
                  dot8(w2.w0, w2.w1, x0a, x0b), dot8(w3.w0, w3.w1, x0a, x0b)),
        vec4<f32>(dot8(w0.w0, w0.w1, x1a, x1b), dot8(w1.w0, w1.w1, x1a, x1b),
                  dot8(w2.w0, w2.w1, x1a, x1b), dot8(w3.w0, w3.w1, x1a, x1b)),
        vec4<f32>(dot8(w0.w0, w0.w1, x2a, x2b), dot8(w1.w0, w1.w1, x2a, x2b),
                  dot8(w2.w0, w2.w1, x2a, x2b), dot8(w3.w0, w3.w1, x2a, x2b)),
        vec4<f32>(dot8(w0.w0, w0.w1, x3a, x3b), dot8(w1.w0, w1.w1, x3a, x3b),
                  dot8(w2.w0, w2.w1, x3a, x3b), dot8(w3.w0, w3.w1, x3a, x3b)));
}

@compute @workgroup_size(16)
fn main(@builtin(local_invocation_index) li: u32,
#if GROUPS
        @builtin(subgroup_invocation_id) sl: u32,
#endif
        @builtin(workgroup_id) wg: vec3<u32>) {
    let base = wg.x * (LANES * 4u) + li;
    let t0 = wg.y * TT;
    // Tail rows and tokens repeat the last one and skip the store, so no
    // lane leaves the loop early.
    let lr = p.n - 1u;
    let r0 = min(base, lr);
    let r1 = min(base + LANES, lr);
    let r2 = min(base + 2u * LANES, lr);
    let r3 = min(base + 3u * LANES, lr);
    let lt = step.n_tokens - 1u;
    let xs = p.x_stride / 4u;
    let b0 = min(t0, lt) * xs;
    let b1 = min(t0 + 1u, lt) * xs;
    let b2 = min(t0 + 2u, lt) * xs;
    let b3 = min(t0 + 3u, lt) * xs;
    // acc[t][r]: token t0 + t, row r.
    var acc = mat4x4<f32>();
#if GROUPS
    // Keeps w4 in the layout for formats that read it unit by unit.
    if (p.n == 0u) {
        acc[0][0] = bitcast<f32>(w4[0].x);
    }
    // Lanes 2j and 2j + 1 hold the two vec4 of unit j of the group.
    let l8 = sl % 8u;
    let lv = select(l8, l8 / 2u + 4u * (l8 % 2u), FMT_HALVES);
    for (var g = 0u; g < p.k / 32u; g++) {
        let xi = g * 8u + lv;
        let v0 = x[b0 + xi];
        let v1 = x[b1 + xi];
        let v2 = x[b2 + xi];
        let v3 = x[b3 + xi];
        let q0 = fmt_group(r0, g);
        let q1 = fmt_group(r1, g);
        let q2 = fmt_group(r2, g);
        let q3 = fmt_group(r3, g);
        acc += tile(fmt_gunit(q0, 0u), fmt_gunit(q1, 0u), fmt_gunit(q2, 0u), fmt_gunit(q3, 0u),
            subgroupBroadcast(v0, 0u), subgroupBroadcast(v0, 1u), subgroupBroadcast(v1, 0u), subgroupBroadcast(v1, 1u),
            subgroupBroadcast(v2, 0u), subgroupBroadcast(v2, 1u), subgroupBroadcast(v3, 0u), subgroupBroadcast(v3, 1u));
        acc += tile(fmt_gunit(q0, 1u), fmt_gunit(q1, 1u), fmt_gunit(q2, 1u), fmt_gunit(q3, 1u),
            subgroupBroadcast(v0, 2u), subgroupBroadcast(v0, 3u), subgroupBroadcast(v1, 2u), subgroupBroadcast(v1, 3u),
            subgroupBroadcast(v2, 2u), subgroupBroadcast(v2, 3u), subgroupBroadcast(v3, 2u), subgroupBroadcast(v3, 3u));
        acc += tile(fmt_gunit(q0, 2u), fmt_gunit(q1, 2u), fmt_gunit(q2, 2u), fmt_gunit(q3, 2u),
            subgroupBroadcast(v0, 4u), subgroupBroadcast(v0, 5u), subgroupBroadcast(v1, 4u), subgroupBroadcast(v1, 5u),
            subgroupBroadcast(v2, 4u), subgroupBroadcast(v2, 5u), subgroupBroadcast(v3, 4u), subgroupBroadcast(v3, 5u));
        acc += tile(fmt_gunit(q0, 3u), fmt_gunit(q1, 3u), fmt_gunit(q2, 3u), fmt_gunit(q3, 3u),
            subgroupBroadcast(v0, 6u), subgroupBroadcast(v0, 7u), subgroupBroadcast(v1, 6u), subgroupBroadcast(v1, 7u),
            subgroupBroadcast(v2, 6u), subgroupBroadcast(v2, 7u), subgroupBroadcast(v3, 6u), subgroupBroadcast(v3, 7u));
    }
#else
    for (var u = 0u; u < p.k / 8u; u++) {
        let c = fmt_unit(r0, u, p.k, p.soff);
        let i0 = c.c0 / 4u;
        let i1 = c.c1 / 4u;
        acc += tile(c, fmt_unit(r1, u, p.k, p.soff), fmt_unit(r2, u, p.k, p.soff), fmt_unit(r3, u, p.k, p.soff),
            x[b0 + i0], x[b0 + i1], x[b1 + i0], x[b1 + i1],
            x[b2 + i0], x[b2 + i1], x[b3 + i0], x[b3 + i1]);
    }
#endif
    for (var t = 0u; t < TT; t++) {
        if (t0 + t >= step.n_tokens) {
            break;
        }
        let o = (t0 + t) * p.y_stride + p.y_off;
        for (var r = 0u; r < 4u; r++) {
            let row = base + r * LANES;
            if (row < p.n) {
#if ACCUMULATE
                y[o + row] += acc[t][r];
#else
                y[o + row] = acc[t][r];
#endif
            }
        }
    }
}
