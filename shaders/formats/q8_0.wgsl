// Q8_0 (ggml): blocks of 32 weights, w = d * q, q signed 8-bit. Repacked at
// load time into 8 quant words per block, then one word per block at word
// offset `soff` holding d as f16 in its low half (the ggml block is 34 bytes,
// not 4-byte aligned, and WGSL has no byte loads).
#include "common/blk.wgsl"
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 8j..8j + 7
const FMT_HALVES: bool = false;
const FMT_BLOCK: u32 = 32u;

fn q8_unpack(q: u32) -> vec4<f32> {
    return vec4<f32>(
        f32(bitcast<i32>(q << 24u) >> 24u),
        f32(bitcast<i32>(q << 16u) >> 24u),
        f32(bitcast<i32>(q << 8u) >> 24u),
        f32(bitcast<i32>(q) >> 24u));
}

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let blk = fmt_blk(row, u / 4u, k / 32u);
    let j = u % 4u;
    let d = unpack2x16float(w[soff + blk]).x;
    var r: Unit;
    r.w0 = q8_unpack(w[blk * 8u + j * 2u]) * d;
    r.w1 = q8_unpack(w[blk * 8u + j * 2u + 1u]) * d;
    r.c0 = (u / 4u) * 32u + j * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}

#if GROUPS
// A group is one block: its 32 quant bytes in two vec4 loads, d in one.
struct Group { q0: vec4<u32>, q1: vec4<u32>, d: f32 }

fn fmt_group(row: u32, g: u32) -> Group {
    let blk = fmt_blk(row, g, p.k / 32u);
    return Group(w4[blk * 2u], w4[blk * 2u + 1u], unpack2x16float(w[p.soff + blk]).x);
}

// The two quant words of unit j.
fn q8_words(b: Group, j: u32) -> vec2<u32> {
    var q = b.q0.xy;
    if (j == 1u) { q = b.q0.zw; }
    if (j == 2u) { q = b.q1.xy; }
    if (j == 3u) { q = b.q1.zw; }
    return q;
}

fn fmt_gunit(b: Group, j: u32) -> Unit {
    let q = q8_words(b, j);
    var r: Unit;
    r.w0 = q8_unpack(q.x) * b.d;
    r.w1 = q8_unpack(q.y) * b.d;
    return r;
}

// As for 4-bit blocks (common/q4_gdot.wgsl): bytes masked in place against x
// pre-scaled by 2^-8i. Flipping each byte's top bit turns the signed q into
// q + 128, unsigned, which fmt_gfinish takes back as 128 times the sum of x.
const Q8_B: vec4<u32> = vec4<u32>(0xFFu, 0xFF00u, 0xFF0000u, 0xFF000000u);
const FMT_XA: vec4<f32> = vec4<f32>(1.0, 0.00390625, 0.0000152587890625, 0.000000059604644775390625);
const FMT_XB: vec4<f32> = FMT_XA;

fn fmt_gdot(b: Group, j: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    let q = q8_words(b, j);
    let u0 = vec4<u32>(q.x ^ 0x80808080u) & Q8_B;
    let u1 = vec4<u32>(q.y ^ 0x80808080u) & Q8_B;
    return dot(vec4<f32>(u0), xa) + dot(vec4<f32>(u1), xb);
}

fn fmt_gfinish(b: Group, s: f32, sx: f32) -> f32 {
    return b.d * (s - 128.0 * sx);
}
#endif
