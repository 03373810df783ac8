// Kept value i of a sparse weight stored as f16, two per word.
fn sp_value(i: u32, vo: u32, so: u32) -> f32 {
    return unpack2x16float(w[vo + i / 2u])[i % 2u];
}
