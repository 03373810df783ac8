// Q4_K (ggml): super-blocks of 256 weights in 8 sub-blocks of 32, each with
// a 6-bit scale and min: w = d * sc * q - dmin * m, q 4-bit. Sub-blocks 2j
// and 2j+1 share 32 quant bytes (low and high nibbles). The 144-byte block is
// repacked at load time into 32 quant words, then 4 words per block at `soff`:
// (d, dmin) as two f16, and the 12 packed scale bytes.
#include "common/blk.wgsl"
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 8j..8j + 7
const FMT_HALVES: bool = false;
const FMT_BLOCK: u32 = 256u;

#include "common/kscale.wgsl"

fn nibbles(v: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>((v >> shift) & 15u, (v >> (shift + 8u)) & 15u, (v >> (shift + 16u)) & 15u, (v >> (shift + 24u)) & 15u));
}

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let blk = fmt_blk(row, u / 32u, k / 256u);
    let s = (u % 32u) / 4u;
    let p = u % 4u;
    let sbase = soff + blk * 4u;
    let dm = unpack2x16float(w[sbase]);
    let scm = k_scale_min(sbase, s);
    let q = blk * 32u + 8u * (s / 2u) + 2u * p;
    let shift = 4u * (s % 2u);
    let a = dm.x * scm.x;
    let b = dm.y * scm.y;
    var r: Unit;
    r.w0 = nibbles(w[q], shift) * a - b;
    r.w1 = nibbles(w[q + 1u], shift) * a - b;
    r.c0 = (u / 32u) * 256u + s * 32u + p * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}

#if GROUPS
#include "common/group_units.wgsl"
#endif
