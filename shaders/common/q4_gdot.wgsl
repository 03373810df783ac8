// The GROUPS dot for 4-bit blocks stored as ggml lays them out (byte i: weight
// i in its low nibble, weight i + 16 in its high one). A nibble is masked in
// place, never shifted down: (q & 0xF << s) converts to nibble * 2^s exactly,
// and x comes pre-scaled by 2^-s (FMT_XA, FMT_XB), so each product is the
// same float as nibble * x. The block's scale and offset wait for
// fmt_gfinish, once per group: three operations per weight, not five.
const Q4_LO: vec4<u32> = vec4<u32>(0xFu, 0xF00u, 0xF0000u, 0xF000000u);
const Q4_HI: vec4<u32> = vec4<u32>(0xF0u, 0xF000u, 0xF00000u, 0xF0000000u);
const FMT_XA: vec4<f32> = vec4<f32>(1.0, 0.00390625, 0.0000152587890625, 0.000000059604644775390625);
const FMT_XB: vec4<f32> = vec4<f32>(0.0625, 0.000244140625, 0.00000095367431640625, 0.0000000037252902984619140625);

fn fmt_gdot(b: Group, j: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    let q = vec4<u32>(b.q[j]);
    return dot(vec4<f32>(q & Q4_LO), xa) + dot(vec4<f32>(q & Q4_HI), xb);
}
