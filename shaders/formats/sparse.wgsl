// Sparse weights (engine/src/formats/sparse.rs): a bitmask of kept columns
// and the kept values in a block format. A unit is still 8 dense columns,
// with zeros where pruned, so every kernel reads sparse weights unchanged;
// only the kept values, their scales and the mask are loaded.
// Header words: 0 mask, 1 group offsets, 2 values, 3 value scales (word
// offsets), 4 kept per unit and 5 kept per row (N:M only).
// A unit's kept values are consecutive in the value stream, so the value
// decoder loads one small window of words and places each value with
// bit arithmetic (no branches, no per-value loads).
struct Unit { w0: vec4<f32>, w1: vec4<f32>, c0: u32, c1: u32 }
const FMT_BLOCK: u32 = 32u;

// Kept values before slot j of a unit with mask byte mb.
fn sp_rank(mb: u32, j: u32) -> u32 {
    return countOneBits(mb & ((1u << j) - 1u));
}

fn sp_kept(mb: u32, j: u32) -> bool {
    return ((mb >> j) & 1u) == 1u;
}

#include "formats/sparse_{{SPARSE_VALUES}}.wgsl"

fn fmt_unit(row: u32, u: u32, k: u32, soff: u32) -> Unit {
    let words = k / 32u;
    let mrow = w[0] + row * words;
    let mw = w[mrow + u / 4u];
    let sh = 8u * (u % 4u);
    let mb = (mw >> sh) & 255u;
#if SPARSE_NM
    // A fixed count per group: the unit's first value by arithmetic.
    let c = row * w[5] + u * w[4];
#else
    // The group's first value, then the bits before this unit in the group.
    let g = u / 32u;
    var c = w[w[1] + row * ((words + 7u) / 8u) + g];
    for (var q = g * 8u; q < u / 4u; q++) {
        c += countOneBits(w[mrow + q]);
    }
    c += countOneBits(mw & ((1u << sh) - 1u));
#endif
    var r = sp_values(c, mb, w[2], w[3]);
    r.c0 = u * 8u;
    r.c1 = r.c0 + 4u;
    return r;
}
