//! Q4_K: 256-weight super-blocks, 4-bit codes, a 6-bit scale and minimum
//! per 32-weight sub-block (`kquant.rs`).

use super::{kquant, FormatSpec, GpuLayout, WeightFormat};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "q4_k",
    block_size: 256,
    block_bytes: 144,
    // quants: qs; scales: (d, dmin) and the 12 packed scale bytes
    gpu: GpuLayout::Blocks {
        quant_at: 16,
        quant_words: 32,
        scales: &[(0, 4), (4, 4), (8, 4), (12, 4)],
    },
    ggml_type: 12,
    file_type: 14,
    fallback: Some(WeightFormat::Q5_0),
    budget: 0.10,
    decode: |d, o| kquant::decode(d, o, false),
    encode: |x, o| kquant::encode(x, o, false),
    grid: None,
    sparse_values: None,
};
