// out[t, :] = dequantize(table row tokens[t]) for t < n_tokens.
// One thread per 8-weight unit; grid y is the token.
#include "common/step.wgsl"

struct Params {
    rows: u32, // rows of the table in this part
    d: u32,
    soff: u32,
    row0: u32, // first token id of this part
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

#include "formats/{{FORMAT}}.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let u = gid.x;
    let t = gid.y;
    if (u >= p.d / 8u || t >= step.n_tokens) {
        return;
    }
    // Each part of a split table writes the tokens it holds; ids are
    // checked on the host, and an id outside every part reads nothing.
    let id = tokens[t];
    if (id < p.row0 || id - p.row0 >= p.rows) {
        return;
    }
    let row = id - p.row0;
    let un = fmt_unit(row, u, p.d, p.soff);
    let o = t * p.d;
    for (var i = 0u; i < 4u; i++) {
        y[o + un.c0 + i] = un.w0[i];
        y[o + un.c1 + i] = un.w1[i];
    }
}
