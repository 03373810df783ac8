// y[n] (+)= sum_k W[n, k] * x[k] with no workgroup memory or barriers: each
// invocation computes 4 rows (16 invocations, 64 rows per workgroup). Chosen
// on CPU adapters (llvmpipe/lavapipe), where a barrier is a coroutine switch
// and adjacent invocations run as the lanes of one SIMD vector: the work is
// dominated by loads, and each x load is shared by 4 rows.
//
// With GROUPS (subgroups, k a multiple of 32; see matmul_rows.wgsl), x comes
// one vec4 per lane and group of 32 columns, handed round by
// subgroupBroadcast, and the weights a group at a time (fmt_group).
#include "common/proj.wgsl"

const R: u32 = 4u;
const LANES: u32 = 16u;

fn dot8(w: Unit, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    return dot(w.w0, xa) + dot(w.w1, xb);
}

#if GROUPS
fn unit4g(j: u32, g0: Group, g1: Group, g2: Group, g3: Group, xa: vec4<f32>, xb: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot8(fmt_gunit(g0, j), xa, xb), dot8(fmt_gunit(g1, j), xa, xb),
                     dot8(fmt_gunit(g2, j), xa, xb), dot8(fmt_gunit(g3, j), xa, xb));
}
#endif

@compute @workgroup_size(16)
fn main(@builtin(local_invocation_index) li: u32,
#if GROUPS
        @builtin(subgroup_invocation_id) sl: u32,
#endif
        @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let base = (wg.x + wg.y * nwg.x) * (LANES * R) + li;
    // Tail rows repeat the last row and skip the store: no early return,
    // so every lane stays active through the loop.
    let last = p.n - 1u;
    let r0 = min(base, last);
    let r1 = min(base + LANES, last);
    let r2 = min(base + 2u * LANES, last);
    let r3 = min(base + 3u * LANES, last);
    var x4 = 0u;
    if (p.last_row != 0u) {
        x4 = (step.n_tokens - 1u) * (p.x_stride / 4u);
    }
    var acc = vec4<f32>(0.0);
#if GROUPS
    // Keeps w4 in the layout for formats that read it unit by unit.
    if (p.n == 0u) {
        acc.x = bitcast<f32>(w4[0].x);
    }
    // Lanes 2j and 2j + 1 hold the two vec4 of unit j of the group.
    let l8 = sl % 8u;
    let lv = x4 + select(l8, l8 / 2u + 4u * (l8 % 2u), FMT_HALVES);
    for (var g = 0u; g < p.k / 32u; g++) {
        let v = x[g * 8u + lv];
        let q0 = fmt_group(r0, g);
        let q1 = fmt_group(r1, g);
        let q2 = fmt_group(r2, g);
        let q3 = fmt_group(r3, g);
        acc += unit4g(0u, q0, q1, q2, q3, subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u));
        acc += unit4g(1u, q0, q1, q2, q3, subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u));
        acc += unit4g(2u, q0, q1, q2, q3, subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u));
        acc += unit4g(3u, q0, q1, q2, q3, subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
    }
#else
    for (var u = 0u; u < p.k / 8u; u++) {
        let a = fmt_unit(r0, u, p.k, p.soff);
        let b = fmt_unit(r1, u, p.k, p.soff);
        let c = fmt_unit(r2, u, p.k, p.soff);
        let d = fmt_unit(r3, u, p.k, p.soff);
        let xa = x[x4 + a.c0 / 4u];
        let xb = x[x4 + a.c1 / 4u];
        acc += vec4<f32>(dot8(a, xa, xb), dot8(b, xa, xb), dot8(c, xa, xb), dot8(d, xa, xb));
    }
#endif
    for (var r = 0u; r < R; r++) {
        let row = base + r * LANES;
        if (row < p.n) {
#if ACCUMULATE
            y[p.y_off + row] += acc[r];
#else
            y[p.y_off + row] = acc[r];
#endif
        }
    }
}
