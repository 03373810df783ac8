//! F16: dense IEEE halves, two to a GPU word.

use super::{blocks, FormatSpec, GpuLayout};
use half::f16;

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "f16",
    block_size: 1,
    block_bytes: 2,
    gpu: GpuLayout::Dense,
    ggml_type: 1,
    file_type: 1,
    fallback: None,
    budget: 5e-4,
    decode,
    encode,
    grid: None,
    sparse_values: Some(sparse_values),
};

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    x.iter().for_each(|v| blocks::push_f16(out, *v));
}

/// Kept values two to a word; no scales.
fn sparse_values(bytes: &[u8]) -> (Vec<u32>, Vec<u32>) {
    (
        bytes.chunks_exact(4).map(|c| blocks::word(c, 0)).collect(),
        Vec::new(),
    )
}
