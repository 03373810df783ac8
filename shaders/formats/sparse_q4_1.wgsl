// Kept values stored as Q4_1 over the kept values, repacked: codes eight per
// word in value order (low nibble first), one (d, m) f16 pair per 32 values.
struct SpWin { codes: u32, sa: vec2<f32>, sb: vec2<f32> }

fn sp_window(c: u32, vo: u32, so: u32) -> SpWin {
    let s = 4u * (c % 8u);
    let lo = w[vo + c / 8u];
    let hi = w[vo + c / 8u + 1u];
    var win: SpWin;
    win.codes = select((lo >> s) | (hi << (32u - s)), lo, s == 0u);
    win.sa = unpack2x16float(w[so + c / 32u]);
    win.sb = unpack2x16float(w[so + c / 32u + 1u]);
    return win;
}

fn sp_at(win: SpWin, r: u32, c: u32) -> f32 {
    let q = (win.codes >> (4u * r)) & 15u;
    let dm = select(win.sa, win.sb, c % 32u + r >= 32u);
    return f32(q) * dm.x + dm.y;
}
