//! BF16: the high halves of f32s, two to a GPU word.

use super::{FormatSpec, GpuLayout};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "bf16",
    block_size: 1,
    block_bytes: 2,
    gpu: GpuLayout::Dense,
    ggml_type: 30,
    file_type: 32,
    fallback: None,
    budget: 3e-3,
    decode,
    encode,
    grid: None,
    sparse_values: None,
};

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    x.iter().for_each(|v| {
        // Round to nearest even, as ggml's fp32_to_bf16 does (NaN kept quiet).
        let b = v.to_bits();
        let h = if v.is_nan() {
            (b >> 16) | 64
        } else {
            (b + (0x7fff + ((b >> 16) & 1))) >> 16
        };
        out.extend_from_slice(&(h as u16).to_le_bytes());
    });
}
