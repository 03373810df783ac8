// y[n] (+)= sum_k W[n, k] * x[k] with no workgroup memory or barriers: each
// invocation computes 4 rows (8 invocations, 32 rows per workgroup: one SIMD
// batch on llvmpipe, and a 576-row weight is 18 workgroups, which two
// threads share evenly, where nine 64-row workgroups left one thread idle a
// ninth of the time). Chosen
// on CPU adapters (llvmpipe/lavapipe), where a barrier is a coroutine switch
// and adjacent invocations run as the lanes of one SIMD vector: the work is
// dominated by loads, and each x load is shared by 4 rows.
//
// With GROUPS (subgroups, k a multiple of 32; see matmul_rows.wgsl), x comes
// one vec4 per lane and group of 32 columns, handed round by
// subgroupBroadcast, and the weights a group at a time (fmt_group, fmt_gdot).
// GROUPS kernels can also take x through the step before them, saving a
// dispatch and a pass over x: NORM reads the residual stream and applies
// RMSNorm (weight xg, the scale after the dot), GATED reads the gate and up
// projections side by side and applies the gated activation.
#include "common/proj.wgsl"

const R: u32 = 4u;
const LANES: u32 = 8u;

fn dot8(w: Unit, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    return dot(w.w0, xa) + dot(w.w1, xb);
}

#if GROUPS
// One row's dot over a group: x as fmt_gdot wants it, then the block's scale.
fn grow(b: Group, sx: f32, a0: vec4<f32>, b0: vec4<f32>, a1: vec4<f32>, b1: vec4<f32>,
        a2: vec4<f32>, b2: vec4<f32>, a3: vec4<f32>, b3: vec4<f32>) -> f32 {
    let s = (fmt_gdot(b, 0u, a0, b0) + fmt_gdot(b, 1u, a1, b1)) + (fmt_gdot(b, 2u, a2, b2) + fmt_gdot(b, 3u, a3, b3));
    return fmt_gfinish(b, s, sx);
}
#endif
#if GATED
#include "common/gate_act.wgsl"
#endif

@compute @workgroup_size(8)
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
    let lg = select(l8, l8 / 2u + 4u * (l8 % 2u), FMT_HALVES);
    // NORM: this lane's share of the sum of squares (lanes 0..7 each hold
    // an eighth of x).
    var ss = 0.0;
    for (var g = 0u; g < p.k / 32u; g++) {
        let xi = g * 8u + lg;
#if NORM
        let xr = x[x4 + xi];
        ss += dot(xr, xr);
        let v = xr * xg[xi];
#else
#if GATED
        let gv = x[x4 + xi];
        let v = vec4<f32>(gate_act(gv.x), gate_act(gv.y), gate_act(gv.z), gate_act(gv.w)) * x[x4 + p.k / 4u + xi];
#else
        let v = x[x4 + xi];
#endif
#endif
        let q0 = fmt_group(r0, g);
        let q1 = fmt_group(r1, g);
        let q2 = fmt_group(r2, g);
        let q3 = fmt_group(r3, g);
        let c0 = subgroupBroadcast(v, 0u);
        let c1 = subgroupBroadcast(v, 1u);
        let c2 = subgroupBroadcast(v, 2u);
        let c3 = subgroupBroadcast(v, 3u);
        let c4 = subgroupBroadcast(v, 4u);
        let c5 = subgroupBroadcast(v, 5u);
        let c6 = subgroupBroadcast(v, 6u);
        let c7 = subgroupBroadcast(v, 7u);
        // The group's plain sum of x, for formats with a per-block offset.
        let sx = dot(((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)), vec4<f32>(1.0));
        let a0 = c0 * FMT_XA;
        let b0 = c1 * FMT_XB;
        let a1 = c2 * FMT_XA;
        let b1 = c3 * FMT_XB;
        let a2 = c4 * FMT_XA;
        let b2 = c5 * FMT_XB;
        let a3 = c6 * FMT_XA;
        let b3 = c7 * FMT_XB;
        acc += vec4<f32>(grow(q0, sx, a0, b0, a1, b1, a2, b2, a3, b3), grow(q1, sx, a0, b0, a1, b1, a2, b2, a3, b3),
                         grow(q2, sx, a0, b0, a1, b1, a2, b2, a3, b3), grow(q3, sx, a0, b0, a1, b1, a2, b2, a3, b3));
    }
#if NORM
    // RMSNorm of x as a scale on the rows' dots (wider subgroups repeat
    // lanes 0..7, so only those count).
    let total = subgroupAdd(select(0.0, ss, sl < 8u));
    acc *= inverseSqrt(total / f32(p.k) + bitcast<f32>(p.norm_eps));
#endif
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
