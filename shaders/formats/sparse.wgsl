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
// Unit j of a 32-column group holds columns 8j..8j + 7
const FMT_HALVES: bool = false;
const FMT_BLOCK: u32 = 32u;

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
    // Slot j's value is the unit's (number of kept slots before j)-th: a
    // running count, not a popcount per slot (a vector popcount is a dozen
    // instructions on CPU adapters).
    let win = sp_window(c, w[2], w[3]);
    let k0 = mb & 1u;
    let k1 = (mb >> 1u) & 1u;
    let k2 = (mb >> 2u) & 1u;
    let k3 = (mb >> 3u) & 1u;
    let k4 = (mb >> 4u) & 1u;
    let k5 = (mb >> 5u) & 1u;
    let k6 = (mb >> 6u) & 1u;
    let k7 = (mb >> 7u) & 1u;
    let r1 = k0;
    let r2 = r1 + k1;
    let r3 = r2 + k2;
    let r4 = r3 + k3;
    let r5 = r4 + k4;
    let r6 = r5 + k5;
    let r7 = r6 + k6;
    var un: Unit;
    // A pruned slot reads some neighbour's value: select, not multiply by 0,
    // so an infinite neighbour cannot leave a NaN there.
    un.w0 = select(vec4<f32>(0.0),
        vec4<f32>(sp_at(win, 0u, c), sp_at(win, r1, c), sp_at(win, r2, c), sp_at(win, r3, c)),
        vec4<u32>(k0, k1, k2, k3) == vec4<u32>(1u));
    un.w1 = select(vec4<f32>(0.0),
        vec4<f32>(sp_at(win, r4, c), sp_at(win, r5, c), sp_at(win, r6, c), sp_at(win, r7, c)),
        vec4<u32>(k4, k5, k6, k7) == vec4<u32>(1u));
    un.c0 = u * 8u;
    un.c1 = un.c0 + 4u;
    return un;
}

#if GROUPS
#include "common/group_units.wgsl"
#endif
