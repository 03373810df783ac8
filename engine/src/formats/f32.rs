//! F32: dense little-endian floats.

use super::{FormatSpec, GpuLayout};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "f32",
    block_size: 1,
    block_bytes: 4,
    gpu: GpuLayout::Dense,
    ggml_type: 0,
    file_type: 0,
    fallback: None,
    budget: 0.0,
    decode,
    encode,
    grid: None,
    sparse_values: None,
};

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    x.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
}
