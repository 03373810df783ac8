// Kept values stored as Q8_0 over the kept values: signed bytes four per
// word in value order (ggml's own order), one f16 scale word per 32 values.
// A unit's up to 8 values start anywhere in a word, so they span 3 words.
fn sp_q8(w3: vec3<u32>, sa: f32, sb: f32, c: u32, mb: u32, j: u32) -> f32 {
    let r = sp_rank(mb, j);
    let p = c % 4u + r;
    let word = select(select(w3.x, w3.y, p >= 4u), w3.z, p >= 8u);
    let q = bitcast<i32>(word << (24u - 8u * (p % 4u))) >> 24u;
    let d = select(sa, sb, c % 32u + r >= 32u);
    return select(0.0, f32(q) * d, sp_kept(mb, j));
}

fn sp_values(c: u32, mb: u32, vo: u32, so: u32) -> Unit {
    let b = vo + c / 4u;
    let w3 = vec3<u32>(w[b], w[b + 1u], w[b + 2u]);
    let sa = unpack2x16float(w[so + c / 32u]).x;
    let sb = unpack2x16float(w[so + c / 32u + 1u]).x;
    var u: Unit;
    u.w0 = vec4<f32>(sp_q8(w3, sa, sb, c, mb, 0u), sp_q8(w3, sa, sb, c, mb, 1u),
                     sp_q8(w3, sa, sb, c, mb, 2u), sp_q8(w3, sa, sb, c, mb, 3u));
    u.w1 = vec4<f32>(sp_q8(w3, sa, sb, c, mb, 4u), sp_q8(w3, sa, sb, c, mb, 5u),
                     sp_q8(w3, sa, sb, c, mb, 6u), sp_q8(w3, sa, sb, c, mb, 7u));
    return u;
}
