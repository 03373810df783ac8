// Scale helpers shared by the Q4_K and Q5_K formats: the 12 packed bytes of
// eight 6-bit (scale, min) pairs live in words 1..3 of a block's scale words.
fn k_byte(sbase: u32, i: u32) -> u32 {
    return (w[sbase + 1u + i / 4u] >> (8u * (i % 4u))) & 255u;
}

// ggml's get_scale_min_k4 on the packed scale bytes: (scale, min).
fn k_scale_min(sbase: u32, s: u32) -> vec2<f32> {
    if (s < 4u) {
        return vec2<f32>(f32(k_byte(sbase, s) & 63u), f32(k_byte(sbase, s + 4u) & 63u));
    }
    let a = k_byte(sbase, s + 4u);
    return vec2<f32>(f32((a & 15u) | ((k_byte(sbase, s - 4u) >> 6u) << 4u)),
                     f32((a >> 4u) | ((k_byte(sbase, s) >> 6u) << 4u)));
}
