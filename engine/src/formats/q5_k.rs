//! Q5_K: Q4_K's super-blocks with a fifth bit per code (qh before qs).

use super::{kquant, FormatSpec, GpuLayout, WeightFormat};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "q5_k",
    block_size: 256,
    block_bytes: 176,
    // quants: qh, qs; scales: (d, dmin) and the 12 packed scale bytes
    gpu: GpuLayout::Blocks {
        quant_at: 16,
        quant_words: 40,
        scales: &[(0, 4), (4, 4), (8, 4), (12, 4)],
    },
    ggml_type: 13,
    file_type: 16,
    fallback: Some(WeightFormat::Q5_1),
    budget: 0.05,
    decode: |d, o| kquant::decode(d, o, true),
    encode: |x, o| kquant::encode(x, o, true),
    grid: None,
    sparse_values: None,
};
