// Kept values stored as Q8_0 over the kept values: signed bytes four per
// word in value order (ggml's own order), one f16 scale word per 32 values.
// A unit's window: the 8 bytes from its first value on (two words).
struct SpWin { lo: u32, hi: u32, sa: f32, sb: f32 }

fn sp_window(c: u32, vo: u32, so: u32) -> SpWin {
    let s = 8u * (c % 4u);
    let b = vo + c / 4u;
    let w0 = w[b];
    let w1 = w[b + 1u];
    let w2 = w[b + 2u];
    var win: SpWin;
    win.lo = select((w0 >> s) | (w1 << (32u - s)), w0, s == 0u);
    win.hi = select((w1 >> s) | (w2 << (32u - s)), w1, s == 0u);
    win.sa = unpack2x16float(w[so + c / 32u]).x;
    win.sb = unpack2x16float(w[so + c / 32u + 1u]).x;
    return win;
}

fn sp_at(win: SpWin, r: u32, c: u32) -> f32 {
    let word = select(win.lo, win.hi, r >= 4u);
    let q = bitcast<i32>(word << (24u - 8u * (r % 4u))) >> 24u;
    return f32(q) * select(win.sa, win.sb, c % 32u + r >= 32u);
}
