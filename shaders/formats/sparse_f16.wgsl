// Kept values stored as f16, two per word in value order. A unit's window:
// the 8 values from its first on (five words when it starts mid-word).
struct SpWin { a: vec4<f32>, b: vec4<f32> }

fn sp_window(c: u32, vo: u32, so: u32) -> SpWin {
    let b = vo + c / 2u;
    let h0 = unpack2x16float(w[b]);
    let h1 = unpack2x16float(w[b + 1u]);
    let h2 = unpack2x16float(w[b + 2u]);
    let h3 = unpack2x16float(w[b + 3u]);
    let h4 = unpack2x16float(w[b + 4u]);
    var win: SpWin;
    if (c % 2u == 0u) {
        win.a = vec4<f32>(h0, h1);
        win.b = vec4<f32>(h2, h3);
    } else {
        win.a = vec4<f32>(h0.y, h1, h2.x);
        win.b = vec4<f32>(h2.y, h3, h4.x);
    }
    return win;
}

fn sp_at(win: SpWin, r: u32, c: u32) -> f32 {
    return select(win.a, win.b, r >= 4u)[r % 4u];
}
