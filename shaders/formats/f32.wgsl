// Dense f32 weights, row-major [n, k], k a multiple of 8. A unit is 8
// consecutive columns returned as two vec4 with the column of each.
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 8j..8j + 7
const FMT_HALVES: bool = false;
const FMT_BLOCK: u32 = 8u;

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let base = row * k + u * 8u;
    var r: Unit;
    r.w0 = vec4<f32>(bitcast<f32>(w[base]), bitcast<f32>(w[base + 1u]), bitcast<f32>(w[base + 2u]), bitcast<f32>(w[base + 3u]));
    r.w1 = vec4<f32>(bitcast<f32>(w[base + 4u]), bitcast<f32>(w[base + 5u]), bitcast<f32>(w[base + 6u]), bitcast<f32>(w[base + 7u]));
    r.c0 = u * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}

#if GROUPS
#include "common/group_units.wgsl"
#endif
