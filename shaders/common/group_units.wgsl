// The CPU projections' group API (GROUPS, ops/matvec_rows.wgsl) for formats
// with no faster way to read a group of 32 columns: unit by unit.
struct Group { row: u32, g: u32 }

fn fmt_group(row: u32, g: u32) -> Group {
    return Group(row, g);
}

fn fmt_gunit(b: Group, j: u32) -> Unit {
    return fmt_unit(b.row, b.g * 4u + j, p.k, p.soff);
}

// Plain units: x unscaled, the format's scales already in the unit.
const FMT_XA: vec4<f32> = vec4<f32>(1.0);
const FMT_XB: vec4<f32> = vec4<f32>(1.0);

fn fmt_gdot(b: Group, j: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    let u = fmt_gunit(b, j);
    return dot(u.w0, xa) + dot(u.w1, xb);
}

fn fmt_gfinish(b: Group, s: f32, sx: f32) -> f32 {
    return s;
}
