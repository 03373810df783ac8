// Kept value i of a sparse weight stored as Q4_0 over the kept values: in a
// block, byte b holds value b (low nibble) and value b + 16 (high nibble).
fn sp_value(i: u32, vo: u32, so: u32) -> f32 {
    let j = i % 32u;
    let b = j % 16u;
    let q = (w[vo + (i / 32u) * 4u + b / 4u] >> (8u * (b % 4u) + 4u * (j / 16u))) & 15u;
    return (f32(q) - 8.0) * unpack2x16float(w[so + i / 32u]).x;
}
