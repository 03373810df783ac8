// Kept values stored as f16, two per word in value order: a unit's up to 8
// values span 5 words.
fn sp_h(v: array<vec2<f32>, 5>, c: u32, mb: u32, j: u32) -> f32 {
    let p = c % 2u + sp_rank(mb, j);
    var x = v[0];
    if (p >= 2u) { x = v[1]; }
    if (p >= 4u) { x = v[2]; }
    if (p >= 6u) { x = v[3]; }
    if (p >= 8u) { x = v[4]; }
    return select(0.0, select(x.x, x.y, p % 2u == 1u), sp_kept(mb, j));
}

fn sp_values(c: u32, mb: u32, vo: u32, so: u32) -> Unit {
    let b = vo + c / 2u;
    let v = array<vec2<f32>, 5>(unpack2x16float(w[b]), unpack2x16float(w[b + 1u]),
        unpack2x16float(w[b + 2u]), unpack2x16float(w[b + 3u]), unpack2x16float(w[b + 4u]));
    var u: Unit;
    u.w0 = vec4<f32>(sp_h(v, c, mb, 0u), sp_h(v, c, mb, 1u), sp_h(v, c, mb, 2u), sp_h(v, c, mb, 3u));
    u.w1 = vec4<f32>(sp_h(v, c, mb, 4u), sp_h(v, c, mb, 5u), sp_h(v, c, mb, 6u), sp_h(v, c, mb, 7u));
    return u;
}
