// The CPU projections' group API (GROUPS, ops/matvec_rows.wgsl) for formats
// with no faster way to read a group of 32 columns: unit by unit.
struct Group { row: u32, g: u32 }

fn fmt_group(row: u32, g: u32) -> Group {
    return Group(row, g);
}

fn fmt_gunit(b: Group, j: u32) -> Unit {
    return fmt_unit(b.row, b.g * 4u + j, p.k, p.soff);
}
