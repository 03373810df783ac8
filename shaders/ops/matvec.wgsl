// y[n] (+)= sum_k W[n, k] * x[k] for one token (decode). 8 rows per
// workgroup, 32 lanes per row striding over the row's 8-weight units, then a
// workgroup-memory reduction (portable: no subgroups needed).
#include "common/proj.wgsl"

const LANES: u32 = 32u;
const ROWS: u32 = 8u;
var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
        @builtin(subgroup_size) sg_size: u32,
#endif
        ) {
    let lane = li % LANES;
    let row = (wg.x + wg.y * nwg.x) * ROWS + li / LANES;
    var x4 = 0u;
    if (p.last_row != 0u) {
        x4 = (step.n_tokens - 1u) * (p.x_stride / 4u);
    }
    let units = p.k / 8u;
    var acc = 0.0;
    if (row < p.n) {
        for (var u = lane; u < units; u += LANES) {
            let un = fmt_unit(row, u, p.k, p.soff);
            acc += dot(un.w0, x[x4 + un.c0 / 4u]) + dot(un.w1, x[x4 + un.c1 / 4u]);
        }
    }
#if SUBGROUPS
    // Xor shuffles never leave an aligned group of `width` lanes, so rows do
    // not mix even when a subgroup spans several rows; rows wider than the
    // subgroup finish through workgroup memory (one barrier instead of five).
    let width = min(sg_size, LANES);
    var v = acc;
    for (var m = 1u; m < width; m <<= 1u) {
        v += subgroupShuffleXor(v, m);
    }
    red[li] = v;
    workgroupBarrier();
    if (lane == 0u && row < p.n) {
        var total = 0.0;
        for (var i = 0u; i < LANES; i += width) {
            total += red[li + i];
        }
#else
    red[li] = acc;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && row < p.n) {
        let total = red[li];
#endif
#if ACCUMULATE
        y[p.y_off + row] += total;
#else
        y[p.y_off + row] = total;
#endif
    }
}
