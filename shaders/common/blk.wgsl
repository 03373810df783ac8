// Where block `b` of `row` (of `nb` blocks a row) sits in a block format's
// quant and scale regions. Row-major by default; with TILED (chosen at upload
// for the CPU adapters' `Rows` kernels, `formats::WeightLayout`), rows come
// in tiles of 32, the rows of one decode workgroup (half a prefill one), and
// a tile stores its rows' block b side by side: a workgroup walks one
// contiguous stream instead of 32 (64 counting the scales), which the CPU's
// prefetchers follow.
const FMT_TILE: u32 = 32u;

fn fmt_blk(row: u32, b: u32, nb: u32) -> u32 {
#if TILED
    return ((row / FMT_TILE) * nb + b) * FMT_TILE + row % FMT_TILE;
#else
    return row * nb + b;
#endif
}
