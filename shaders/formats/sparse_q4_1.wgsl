// Kept value i of a sparse weight stored as Q4_1 over the kept values:
// nibbles as in Q4_0, and (d, m) as two f16 in the block's scale word.
fn sp_value(i: u32, vo: u32, so: u32) -> f32 {
    let j = i % 32u;
    let b = j % 16u;
    let q = (w[vo + (i / 32u) * 4u + b / 4u] >> (8u * (b % 4u) + 4u * (j / 16u))) & 15u;
    let dm = unpack2x16float(w[so + i / 32u]);
    return f32(q) * dm.x + dm.y;
}
