// y[n] (+)= sum_k W[n, k] * x[k] with one invocation per row and no
// workgroup memory or barriers. Chosen on CPU adapters (llvmpipe/lavapipe),
// where barriers are expensive coroutine switches and 8 adjacent invocations
// run as one SIMD vector anyway; GPUs use matvec.wgsl (32 lanes per row).
#include "common/proj.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = (wg.x + wg.y * nwg.x) * 64u + li;
    if (row >= p.n) {
        return;
    }
    var x4 = 0u;
    if (p.last_row != 0u) {
        x4 = (step.n_tokens - 1u) * (p.x_stride / 4u);
    }
    let units = p.k / 8u;
    var acc = 0.0;
    for (var u = 0u; u < units; u++) {
        let un = fmt_unit(row, u, p.k, p.soff);
        acc += dot(un.w0, x[x4 + un.c0 / 4u]) + dot(un.w1, x[x4 + un.c1 / 4u]);
    }
#if ACCUMULATE
    y[p.y_off + row] += acc;
#else
    y[p.y_off + row] = acc;
#endif
}
