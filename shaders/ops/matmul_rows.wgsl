// Y[t, n] (+)= sum_k W[n, k] * X[t, k] for a batch (prefill) with no
// workgroup memory or barriers: each invocation computes a register tile of
// 4 rows x 4 tokens (16 invocations, 64 rows per workgroup). The CPU-adapter
// twin of matmul.wgsl (see matvec_rows.wgsl): every weight unit is decoded
// once for 4 tokens and every x load serves 4 rows.
#include "common/proj.wgsl"

const LANES: u32 = 16u;
const TT: u32 = 4u;

fn dot8(w0: vec4<f32>, w1: vec4<f32>, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    return dot(w0, xa) + dot(w1, xb);
}

@compute @workgroup_size(16)
fn main(@builtin(local_invocation_index) li: u32,
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
    let units = p.k / 8u;
    // acc_r[t]: row r, token t0 + t.
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var u = 0u; u < units; u++) {
        let w0 = fmt_unit(r0, u, p.k, p.soff);
        let w1 = fmt_unit(r1, u, p.k, p.soff);
        let w2 = fmt_unit(r2, u, p.k, p.soff);
        let w3 = fmt_unit(r3, u, p.k, p.soff);
        let i0 = w0.c0 / 4u;
        let i1 = w0.c1 / 4u;
        let x0a = x[b0 + i0]; let x0b = x[b0 + i1];
        let x1a = x[b1 + i0]; let x1b = x[b1 + i1];
        let x2a = x[b2 + i0]; let x2b = x[b2 + i1];
        let x3a = x[b3 + i0]; let x3b = x[b3 + i1];
        a0 += vec4<f32>(dot8(w0.w0, w0.w1, x0a, x0b), dot8(w0.w0, w0.w1, x1a, x1b),
                        dot8(w0.w0, w0.w1, x2a, x2b), dot8(w0.w0, w0.w1, x3a, x3b));
        a1 += vec4<f32>(dot8(w1.w0, w1.w1, x0a, x0b), dot8(w1.w0, w1.w1, x1a, x1b),
                        dot8(w1.w0, w1.w1, x2a, x2b), dot8(w1.w0, w1.w1, x3a, x3b));
        a2 += vec4<f32>(dot8(w2.w0, w2.w1, x0a, x0b), dot8(w2.w0, w2.w1, x1a, x1b),
                        dot8(w2.w0, w2.w1, x2a, x2b), dot8(w2.w0, w2.w1, x3a, x3b));
        a3 += vec4<f32>(dot8(w3.w0, w3.w1, x0a, x0b), dot8(w3.w0, w3.w1, x1a, x1b),
                        dot8(w3.w0, w3.w1, x2a, x2b), dot8(w3.w0, w3.w1, x3a, x3b));
    }
    for (var t = 0u; t < TT; t++) {
        if (t0 + t >= step.n_tokens) {
            break;
        }
        let o = (t0 + t) * p.y_stride + p.y_off;
        for (var r = 0u; r < 4u; r++) {
            let row = base + r * LANES;
            var v = a0[t];
            if (r == 1u) { v = a1[t]; }
            if (r == 2u) { v = a2[t]; }
            if (r == 3u) { v = a3[t]; }
            if (row < p.n) {
#if ACCUMULATE
                y[o + row] += v;
#else
                y[o + row] = v;
#endif
            }
        }
    }
}
