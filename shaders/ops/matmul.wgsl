// Y[t, n] (+)= sum_k W[n, k] * X[t, k] for a batch of tokens (prefill).
// A workgroup owns 64 rows x 8 tokens: each 32-column chunk of X for the 8
// tokens is staged in workgroup memory, and each thread dequantizes its row's
// units once and applies them to all 8 tokens, so weights are read once per
// 8 tokens instead of once per token.
#include "common/proj.wgsl"

const TR: u32 = 64u;
const TT: u32 = 8u;
var<workgroup> xs: array<vec4<f32>, 64>; // TT tokens x 8 vec4 (32 columns)

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>) {
    let row = wg.x * TR + li;
    let t0 = wg.y * TT;
    let units = p.k / 8u;
    let k4 = p.k / 4u;
    let chunks = (p.k + 31u) / 32u;
    var acc: array<f32, 8>;
    for (var t = 0u; t < TT; t++) {
        acc[t] = 0.0;
    }
    for (var c = 0u; c < chunks; c++) {
        let tt = li / 8u;
        let col4 = c * 8u + li % 8u;
        var xv = vec4<f32>(0.0);
        if (t0 + tt < step.n_tokens && col4 < k4) {
            xv = x[(t0 + tt) * (p.x_stride / 4u) + col4];
        }
        xs[li] = xv;
        workgroupBarrier();
        if (row < p.n) {
            for (var j = 0u; j < 4u; j++) {
                let u = c * 4u + j;
                if (u < units) {
                    let un = fmt_unit(row, u, p.k, p.soff);
                    let i0 = un.c0 / 4u - c * 8u;
                    let i1 = un.c1 / 4u - c * 8u;
                    for (var t = 0u; t < TT; t++) {
                        acc[t] += dot(un.w0, xs[t * 8u + i0]) + dot(un.w1, xs[t * 8u + i1]);
                    }
                }
            }
        }
        workgroupBarrier();
    }
    if (row < p.n) {
        for (var t = 0u; t < TT; t++) {
            if (t0 + t < step.n_tokens) {
                let o = (t0 + t) * p.y_stride + p.y_off + row;
#if ACCUMULATE
                y[o] += acc[t];
#else
                y[o] = acc[t];
#endif
            }
        }
    }
}
