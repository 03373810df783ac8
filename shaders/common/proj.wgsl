// Bindings and parameters shared by the projection kernels (matvec,
// matmul and their CPU-adapter twins): y = W x over one part of a weight.
#include "common/step.wgsl"

struct Params {
    n: u32,        // output rows in this part of the weight
    k: u32,        // input columns (a multiple of the format's block)
    soff: u32,     // word offset of the scale region in `w`
    y_off: u32,    // first output row of this part
    x_stride: u32, // floats between tokens in x
    y_stride: u32, // floats between tokens in y (matmul)
    last_row: u32, // matvec: read x at the batch's last token (LM head after prefill)
    norm_eps: u32, // NORM: RMSNorm's epsilon (f32 bits)
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#if GROUPS
// The same buffer as `w`, for formats whose groups are whole vec4 loads.
@group(0) @binding(5) var<storage, read> w4: array<vec4<u32>>;
#endif
#if NORM
@group(0) @binding(6) var<storage, read> xg: array<vec4<f32>>; // RMSNorm weight
#endif

// Every format's fmt_unit(row, u, ...) returns columns c0/c1 that depend on
// `u` alone, never on `row`: the CPU-adapter kernels load x once per unit and
// share it across the rows an invocation computes.
#include "formats/{{FORMAT}}.wgsl"
