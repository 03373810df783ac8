// Q4_1 (ggml): blocks of 32 weights, w = d * q + m. Byte i of the 16 quant
// bytes holds weight i in its low nibble and weight i + 16 in its high nibble.
// Repacked at load time: 4 quant words per block, then one word per block at
// word offset `soff` holding (d, m) as two f16 exactly as ggml stores them.
#include "common/blk.wgsl"
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 4j.. and 16 + 4j..
const FMT_HALVES: bool = true;
const FMT_BLOCK: u32 = 32u;

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let blk = fmt_blk(row, u / 4u, k / 32u);
    let j = u % 4u;
    let q = w[blk * 4u + j];
    let dm = unpack2x16float(w[soff + blk]);
    let lo = vec4<f32>(vec4<u32>(q & 15u, (q >> 8u) & 15u, (q >> 16u) & 15u, (q >> 24u) & 15u));
    let hi = vec4<f32>(vec4<u32>((q >> 4u) & 15u, (q >> 12u) & 15u, (q >> 20u) & 15u, q >> 28u));
    var r: Unit;
    r.w0 = lo * dm.x + dm.y;
    r.w1 = hi * dm.x + dm.y;
    r.c0 = (u / 4u) * 32u + j * 4u;
    r.c1 = r.c0 + 16u;
    return r;
}

#if GROUPS
// A group is one block: its 16 quant bytes in one vec4 load, (d, m) in one.
struct Group { q: vec4<u32>, dm: vec2<f32> }

fn fmt_group(row: u32, g: u32) -> Group {
    let blk = fmt_blk(row, g, p.k / 32u);
    return Group(w4[blk], unpack2x16float(w[p.soff + blk]));
}

fn fmt_gunit(b: Group, j: u32) -> Unit {
    let q = b.q[j];
    let lo = vec4<f32>(vec4<u32>(q & 15u, (q >> 8u) & 15u, (q >> 16u) & 15u, (q >> 24u) & 15u));
    let hi = vec4<f32>(vec4<u32>((q >> 4u) & 15u, (q >> 12u) & 15u, (q >> 20u) & 15u, q >> 28u));
    var r: Unit;
    r.w0 = lo * b.dm.x + b.dm.y;
    r.w1 = hi * b.dm.x + b.dm.y;
    return r;
}

#include "common/q4_gdot.wgsl"

// w = d q + m: the offset's share of a group is m times the sum of its x.
fn fmt_gfinish(b: Group, s: f32, sx: f32) -> f32 {
    return b.dm.x * s + b.dm.y * sx;
}
#endif
