// Y[t, n] (+)= sum_k W[n, k] * X[t, k] for a batch (prefill), one invocation
// per row and 8 tokens, reading X straight from the storage buffer: no
// workgroup memory and no barriers. The CPU-adapter twin of matmul.wgsl
// (see matvec_rows.wgsl for why).
#include "common/proj.wgsl"

const TT: u32 = 8u;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>) {
    let row = wg.x * 64u + li;
    let t0 = wg.y * TT;
    if (row >= p.n) {
        return;
    }
    let nt = min(TT, step.n_tokens - t0);
    let xs = p.x_stride / 4u;
    let units = p.k / 8u;
    var acc: array<f32, 8>;
    for (var t = 0u; t < TT; t++) {
        acc[t] = 0.0;
    }
    for (var u = 0u; u < units; u++) {
        let un = fmt_unit(row, u, p.k, p.soff);
        let i0 = un.c0 / 4u;
        let i1 = un.c1 / 4u;
        for (var t = 0u; t < nt; t++) {
            let b = (t0 + t) * xs;
            acc[t] += dot(un.w0, x[b + i0]) + dot(un.w1, x[b + i1]);
        }
    }
    for (var t = 0u; t < nt; t++) {
        let o = (t0 + t) * p.y_stride + p.y_off + row;
#if ACCUMULATE
        y[o] += acc[t];
#else
        y[o] = acc[t];
#endif
    }
}
