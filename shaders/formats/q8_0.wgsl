// Q8_0 (ggml): blocks of 32 weights, w = d * q, q signed 8-bit. Repacked at
// load time into 8 quant words per block, then one word per block at word
// offset `soff` holding d as f16 in its low half (the ggml block is 34 bytes,
// not 4-byte aligned, and WGSL has no byte loads).
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
const FMT_BLOCK: u32 = 32u;

fn q8_unpack(q: u32) -> vec4<f32> {
    return vec4<f32>(
        f32(bitcast<i32>(q << 24u) >> 24u),
        f32(bitcast<i32>(q << 16u) >> 24u),
        f32(bitcast<i32>(q << 8u) >> 24u),
        f32(bitcast<i32>(q) >> 24u));
}

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let blk = row * (k / 32u) + u / 4u;
    let j = u % 4u;
    let d = unpack2x16float(w[soff + blk]).x;
    var r: Unit;
    r.w0 = q8_unpack(w[blk * 8u + j * 2u]) * d;
    r.w1 = q8_unpack(w[blk * 8u + j * 2u + 1u]) * d;
    r.c0 = (u / 4u) * 32u + j * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}
