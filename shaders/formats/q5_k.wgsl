// Q5_K (ggml): as Q4_K with a fifth bit per weight: qh byte l holds bit s for
// weight l of sub-block s. The 176-byte block is repacked at load time into
// 40 quant words [qh (8 words), qs (32 words)], then 4 words per block at
// `soff`: (d, dmin) as two f16, and the 12 packed scale bytes.
#include "common/blk.wgsl"
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 8j..8j + 7
const FMT_HALVES: bool = false;
const FMT_BLOCK: u32 = 256u;

#include "common/kscale.wgsl"

fn q5k_values(v: u32, shift: u32, h: u32, s: u32) -> vec4<f32> {
    let lo = vec4<u32>((v >> shift) & 15u, (v >> (shift + 8u)) & 15u, (v >> (shift + 16u)) & 15u, (v >> (shift + 24u)) & 15u);
    let hi = vec4<u32>((h >> s) & 1u, (h >> (s + 8u)) & 1u, (h >> (s + 16u)) & 1u, (h >> (s + 24u)) & 1u) << vec4<u32>(4u);
    return vec4<f32>(lo | hi);
}

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let blk = fmt_blk(row, u / 32u, k / 256u);
    let s = (u % 32u) / 4u;
    let p = u % 4u;
    let sbase = soff + blk * 4u;
    let dm = unpack2x16float(w[sbase]);
    let scm = k_scale_min(sbase, s);
    let qh = blk * 40u + 2u * p;
    let q = blk * 40u + 8u + 8u * (s / 2u) + 2u * p;
    let shift = 4u * (s % 2u);
    let a = dm.x * scm.x;
    let b = dm.y * scm.y;
    var r: Unit;
    r.w0 = q5k_values(w[q], shift, w[qh], s) * a - b;
    r.w1 = q5k_values(w[q + 1u], shift, w[qh + 1u], s) * a - b;
    r.c0 = (u / 32u) * 256u + s * 32u + p * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}

#if GROUPS
#include "common/group_units.wgsl"
#endif
