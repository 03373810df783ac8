// Kept values stored as Q4_0 over the kept values, repacked: codes eight per
// word in value order (low nibble first), one f16 scale word per 32 values.
// A unit's window: the 8 codes from its first value on, and the scales of
// the block it starts in and the next.
struct SpWin { codes: u32, sa: f32, sb: f32 }

fn sp_window(c: u32, vo: u32, so: u32) -> SpWin {
    let s = 4u * (c % 8u);
    let lo = w[vo + c / 8u];
    let hi = w[vo + c / 8u + 1u];
    var win: SpWin;
    win.codes = select((lo >> s) | (hi << (32u - s)), lo, s == 0u);
    win.sa = unpack2x16float(w[so + c / 32u]).x;
    win.sb = unpack2x16float(w[so + c / 32u + 1u]).x;
    return win;
}

// The r-th value of the window.
fn sp_at(win: SpWin, r: u32, c: u32) -> f32 {
    let q = (win.codes >> (4u * r)) & 15u;
    return (f32(q) - 8.0) * select(win.sa, win.sb, c % 32u + r >= 32u);
}
