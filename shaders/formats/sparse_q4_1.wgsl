// Kept values stored as Q4_1 over the kept values, repacked: codes eight per
// word in value order (low nibble first), one (d, m) f16 pair per 32 values.
fn sp_q4(wa: u32, wb: u32, sa: vec2<f32>, sb: vec2<f32>, c: u32, mb: u32, j: u32) -> f32 {
    let r = sp_rank(mb, j);
    let p = c % 8u + r;
    let q = (select(wa, wb, p >= 8u) >> (4u * (p % 8u))) & 15u;
    let dm = select(sa, sb, c % 32u + r >= 32u);
    return select(0.0, f32(q) * dm.x + dm.y, sp_kept(mb, j));
}

fn sp_values(c: u32, mb: u32, vo: u32, so: u32) -> Unit {
    let wa = w[vo + c / 8u];
    let wb = w[vo + c / 8u + 1u];
    let sa = unpack2x16float(w[so + c / 32u]);
    let sb = unpack2x16float(w[so + c / 32u + 1u]);
    var u: Unit;
    u.w0 = vec4<f32>(sp_q4(wa, wb, sa, sb, c, mb, 0u), sp_q4(wa, wb, sa, sb, c, mb, 1u),
                     sp_q4(wa, wb, sa, sb, c, mb, 2u), sp_q4(wa, wb, sa, sb, c, mb, 3u));
    u.w1 = vec4<f32>(sp_q4(wa, wb, sa, sb, c, mb, 4u), sp_q4(wa, wb, sa, sb, c, mb, 5u),
                     sp_q4(wa, wb, sa, sb, c, mb, 6u), sp_q4(wa, wb, sa, sb, c, mb, 7u));
    return u;
}
