// y[n] (+)= sum_k W[n, k] * x[k] with no workgroup memory or barriers: each
// invocation computes 4 rows (16 invocations, 64 rows per workgroup). Chosen
// on CPU adapters (llvmpipe/lavapipe), where a barrier is a coroutine switch
// and adjacent invocations run as the lanes of one SIMD vector: the work is
// dominated by loads, and each x load is shared by 4 rows.
#include "common/proj.wgsl"

const R: u32 = 4u;
const LANES: u32 = 16u;

@compute @workgroup_size(16)
fn main(@builtin(local_invocation_index) li: u32,
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
    let units = p.k / 8u;
    var acc = vec4<f32>(0.0);
    for (var u = 0u; u < units; u++) {
        let a = fmt_unit(r0, u, p.k, p.soff);
        let b = fmt_unit(r1, u, p.k, p.soff);
        let c = fmt_unit(r2, u, p.k, p.soff);
        let d = fmt_unit(r3, u, p.k, p.soff);
        let xa = x[x4 + a.c0 / 4u];
        let xb = x[x4 + a.c1 / 4u];
        acc += vec4<f32>(dot(a.w0, xa) + dot(a.w1, xb), dot(b.w0, xa) + dot(b.w1, xb),
                         dot(c.w0, xa) + dot(c.w1, xb), dot(d.w0, xa) + dot(d.w1, xb));
    }
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
