// Q5_0 (ggml): blocks of 32 weights, w = d * (q - 16), q 5-bit: the low
// nibbles as in Q4_0 plus one high bit per weight in the 32-bit qh (bit i
// for weight i). ggml's 22-byte block is repacked at load time into 5 quant
// words per block [qh, qs0..qs3], then one word per block at `soff` with d
// as f16 in its low half.
#include "common/blk.wgsl"
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 4j.. and 16 + 4j..
const FMT_HALVES: bool = true;
const FMT_BLOCK: u32 = 32u;

#include "common/q5.wgsl"

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let blk = fmt_blk(row, u / 4u, k / 32u);
    let j = u % 4u;
    let qh = w[blk * 5u];
    let q = w[blk * 5u + 1u + j];
    let d = unpack2x16float(w[soff + blk]).x;
    let lo = vec4<u32>(q & 15u, (q >> 8u) & 15u, (q >> 16u) & 15u, (q >> 24u) & 15u) | q5_high(qh, 4u * j);
    let hi = vec4<u32>((q >> 4u) & 15u, (q >> 12u) & 15u, (q >> 20u) & 15u, q >> 28u) | q5_high(qh, 16u + 4u * j);
    var r: Unit;
    r.w0 = (vec4<f32>(lo) - 16.0) * d;
    r.w1 = (vec4<f32>(hi) - 16.0) * d;
    r.c0 = (u / 4u) * 32u + j * 4u;
    r.c1 = r.c0 + 16u;
    return r;
}

#if GROUPS
#include "common/group_units.wgsl"
#endif
