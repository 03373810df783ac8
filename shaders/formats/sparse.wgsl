// Sparse weights (engine/src/formats/sparse.rs): a bitmask of kept columns
// and the kept values in a block format. A unit is still 8 dense columns,
// with zeros where pruned, so every kernel reads sparse weights unchanged;
// only the kept values, their scales and the mask are loaded.
// Header words: 0 mask, 1 group offsets, 2 values, 3 value scales (word
// offsets), 4 kept per unit and 5 kept per row (N:M only).
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
const FMT_BLOCK: u32 = 32u;

#include "formats/sparse_{{SPARSE_VALUES}}.wgsl"

// Value `*c` when column bit `j` of `mb` is kept (then advances `*c`), else 0.
fn sp_take(mb: u32, j: u32, c: ptr<function, u32>, vo: u32, so: u32) -> f32 {
    if (((mb >> j) & 1u) == 0u) {
        return 0.0;
    }
    let v = sp_value(*c, vo, so);
    *c += 1u;
    return v;
}

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let words = k / 32u;
    let mrow = w[0] + row * words;
    let mw = w[mrow + u / 4u];
    let sh = 8u * (u % 4u);
    let mb = (mw >> sh) & 255u;
#if SPARSE_NM
    // A fixed count per group: the unit's first value by arithmetic.
    var c = row * w[5] + u * w[4];
#else
    // The group's first value, then the bits before this unit in the group.
    let g = u / 32u;
    var c = w[w[1] + row * ((words + 7u) / 8u) + g];
    for (var q = g * 8u; q < u / 4u; q++) {
        c += countOneBits(w[mrow + q]);
    }
    c += countOneBits(mw & ((1u << sh) - 1u));
#endif
    let vo = w[2];
    let so = w[3];
    let a0 = sp_take(mb, 0u, &c, vo, so);
    let a1 = sp_take(mb, 1u, &c, vo, so);
    let a2 = sp_take(mb, 2u, &c, vo, so);
    let a3 = sp_take(mb, 3u, &c, vo, so);
    let b0 = sp_take(mb, 4u, &c, vo, so);
    let b1 = sp_take(mb, 5u, &c, vo, so);
    let b2 = sp_take(mb, 6u, &c, vo, so);
    let b3 = sp_take(mb, 7u, &c, vo, so);
    var r: Unit;
    r.w0 = vec4<f32>(a0, a1, a2, a3);
    r.w1 = vec4<f32>(b0, b1, b2, b3);
    r.c0 = u * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}
