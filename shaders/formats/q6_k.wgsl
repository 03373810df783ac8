// Q6_K (ggml): super-blocks of 256 weights, w = d * sc * (q - 32), q 6-bit
// (4 low bits in ql, 2 high bits in qh), an i8 scale per 16 weights. Weight
// i = 128h + 32g + l takes ql[64h + 32(g % 2) + l] (low nibble for g < 2),
// bits 2g of qh[32h + l], and scale i / 16. ggml's 210-byte block is not
// 4-byte aligned; it is repacked at load time into 48 quant words [ql, qh],
// then 5 words per block at `soff`: the 16 scales and d (f16, low half).
#include "common/blk.wgsl"
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
// Unit j of a 32-column group holds columns 8j..8j + 7
const FMT_HALVES: bool = false;
const FMT_BLOCK: u32 = 256u;

fn q6k_values(l: u32, lshift: u32, h: u32, hshift: u32) -> vec4<f32> {
    let lo = vec4<u32>((l >> lshift) & 15u, (l >> (lshift + 8u)) & 15u, (l >> (lshift + 16u)) & 15u, (l >> (lshift + 24u)) & 15u);
    let hi = vec4<u32>((h >> hshift) & 3u, (h >> (hshift + 8u)) & 3u, (h >> (hshift + 16u)) & 3u, (h >> (hshift + 24u)) & 3u);
    return vec4<f32>(lo | (hi << vec4<u32>(4u))) - 32.0;
}

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let blk = fmt_blk(row, u / 32u, k / 256u);
    let s = (u % 32u) / 4u;
    let p = u % 4u;
    let h = s / 4u;
    let g = s % 4u;
    let sbase = soff + blk * 5u;
    let d = unpack2x16float(w[sbase + 4u]).x;
    let si = 8u * h + 2u * g + p / 2u;
    let sc = f32(bitcast<i32>(w[sbase + si / 4u] << (24u - 8u * (si % 4u))) >> 24u);
    let ql = blk * 48u + 16u * h + 8u * (g % 2u) + 2u * p;
    let qh = blk * 48u + 32u + 8u * h + 2u * p;
    let lshift = 4u * (g / 2u);
    let hshift = 2u * g;
    var r: Unit;
    r.w0 = q6k_values(w[ql], lshift, w[qh], hshift) * (d * sc);
    r.w1 = q6k_values(w[ql + 1u], lshift, w[qh + 1u], hshift) * (d * sc);
    r.c0 = (u / 32u) * 256u + s * 32u + p * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}

#if GROUPS
#include "common/group_units.wgsl"
#endif
