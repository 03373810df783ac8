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

// Column t: token t's sums for rows r0..r3 over one unit.
fn unit4(u: u32, r0: u32, r1: u32, r2: u32, r3: u32,
         x0a: vec4<f32>, x0b: vec4<f32>, x1a: vec4<f32>, x1b: vec4<f32>,
         x2a: vec4<f32>, x2b: vec4<f32>, x3a: vec4<f32>, x3b: vec4<f32>) -> mat4x4<f32> {
    let w0 = fmt_unit(r0, u, p.k, p.soff);
    let w1 = fmt_unit(r1, u, p.k, p.soff);
    let w2 = fmt_unit(r2, u, p.k, p.soff);
    let w3 = fmt_unit(r3, u, p.k, p.soff);
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

#if GROUPS
fn unit4g(j: u32, g0: Group, g1: Group, g2: Group, g3: Group,
          x0a: vec4<f32>, x0b: vec4<f32>, x1a: vec4<f32>, x1b: vec4<f32>,
          x2a: vec4<f32>, x2b: vec4<f32>, x3a: vec4<f32>, x3b: vec4<f32>) -> mat4x4<f32> {
    let w0 = fmt_gunit(g0, j);
    let w1 = fmt_gunit(g1, j);
    let w2 = fmt_gunit(g2, j);
    let w3 = fmt_gunit(g3, j);
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
#endif

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
        acc += unit4g(0u, q0, q1, q2, q3,
            subgroupBroadcast(v0, 0u), subgroupBroadcast(v0, 1u), subgroupBroadcast(v1, 0u), subgroupBroadcast(v1, 1u),
            subgroupBroadcast(v2, 0u), subgroupBroadcast(v2, 1u), subgroupBroadcast(v3, 0u), subgroupBroadcast(v3, 1u));
        acc += unit4g(1u, q0, q1, q2, q3,
            subgroupBroadcast(v0, 2u), subgroupBroadcast(v0, 3u), subgroupBroadcast(v1, 2u), subgroupBroadcast(v1, 3u),
            subgroupBroadcast(v2, 2u), subgroupBroadcast(v2, 3u), subgroupBroadcast(v3, 2u), subgroupBroadcast(v3, 3u));
        acc += unit4g(2u, q0, q1, q2, q3,
            subgroupBroadcast(v0, 4u), subgroupBroadcast(v0, 5u), subgroupBroadcast(v1, 4u), subgroupBroadcast(v1, 5u),
            subgroupBroadcast(v2, 4u), subgroupBroadcast(v2, 5u), subgroupBroadcast(v3, 4u), subgroupBroadcast(v3, 5u));
        acc += unit4g(3u, q0, q1, q2, q3,
            subgroupBroadcast(v0, 6u), subgroupBroadcast(v0, 7u), subgroupBroadcast(v1, 6u), subgroupBroadcast(v1, 7u),
            subgroupBroadcast(v2, 6u), subgroupBroadcast(v2, 7u), subgroupBroadcast(v3, 6u), subgroupBroadcast(v3, 7u));
    }
#else
    for (var u = 0u; u < p.k / 8u; u++) {
        let c = fmt_unit(r0, u, p.k, p.soff);
        let i0 = c.c0 / 4u;
        let i1 = c.c1 / 4u;
        acc += unit4(u, r0, r1, r2, r3,
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
