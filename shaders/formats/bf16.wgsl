// Dense bf16 weights, two per u32 word (low half first), row-major [n, k],
// k a multiple of 8. bf16 is the top half of an f32, so a shift unpacks it.
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 8j..8j + 7
const FMT_HALVES: bool = false;
const FMT_BLOCK: u32 = 8u;

fn bf16_pair(v: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(v << 16u), bitcast<f32>(v & 0xffff0000u));
}

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let base = (row * k + u * 8u) / 2u;
    var r: Unit;
    r.w0 = vec4<f32>(bf16_pair(w[base]), bf16_pair(w[base + 1u]));
    r.w1 = vec4<f32>(bf16_pair(w[base + 2u]), bf16_pair(w[base + 3u]));
    r.c0 = u * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}

#if GROUPS
#include "common/group_units.wgsl"
#endif
