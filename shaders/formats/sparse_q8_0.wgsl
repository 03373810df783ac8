// Kept value i of a sparse weight stored as Q8_0 over the kept values: the
// repacked ggml blocks (8 words of signed bytes per 32 values, in order),
// then one f16 scale word per block at `so`.
fn sp_value(i: u32, vo: u32, so: u32) -> f32 {
    let q = bitcast<i32>(w[vo + i / 4u] << (24u - 8u * (i % 4u))) >> 24u;
    return f32(q) * unpack2x16float(w[so + i / 32u]).x;
}
