// IQ4_NL (ggml): blocks of 32 weights, w = d * KV[q], q a 4-bit index into
// a fixed non-linear table; nibbles laid out as in Q4_0. The 18-byte block is
// repacked at load time into 4 quant words, then one word per block at `soff`
// with d as f16 in its low half.
#include "common/blk.wgsl"
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 4j.. and 16 + 4j..
const FMT_HALVES: bool = true;
const FMT_BLOCK: u32 = 32u;

var<private> IQ4NL_KV: array<f32, 16> = array<f32, 16>(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
                                                          1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);

fn iq4nl_kv(i: u32) -> f32 {
    return IQ4NL_KV[i];
}

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let blk = fmt_blk(row, u / 4u, k / 32u);
    let j = u % 4u;
    let q = w[blk * 4u + j];
    let d = unpack2x16float(w[soff + blk]).x;
    var r: Unit;
    r.w0 = vec4<f32>(iq4nl_kv(q & 15u), iq4nl_kv((q >> 8u) & 15u), iq4nl_kv((q >> 16u) & 15u), iq4nl_kv((q >> 24u) & 15u)) * d;
    r.w1 = vec4<f32>(iq4nl_kv((q >> 4u) & 15u), iq4nl_kv((q >> 12u) & 15u), iq4nl_kv((q >> 20u) & 15u), iq4nl_kv(q >> 28u)) * d;
    r.c0 = (u / 4u) * 32u + j * 4u;
    r.c1 = r.c0 + 16u;
    return r;
}

#if GROUPS
#include "common/group_units.wgsl"
#endif
