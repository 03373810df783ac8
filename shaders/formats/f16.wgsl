// Dense f16 weights, two per u32 word (low half first, as in memory), row-major
// [n, k], k a multiple of 8. Unpacked with unpack2x16float so it needs no
// shader-f16 support.
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 8j..8j + 7
const FMT_HALVES: bool = false;
const FMT_BLOCK: u32 = 8u;

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let base = (row * k + u * 8u) / 2u;
    var r: Unit;
    r.w0 = vec4<f32>(unpack2x16float(w[base]), unpack2x16float(w[base + 1u]));
    r.w1 = vec4<f32>(unpack2x16float(w[base + 2u]), unpack2x16float(w[base + 3u]));
    r.c0 = u * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}

#if GROUPS
#include "common/group_units.wgsl"
#endif
