//! Q5_0: blocks of 32, w = d * (q - 16) with 5-bit q (a high-bit word and
//! nibbles) and an f16 d.

use super::{blocks, FormatSpec, GpuLayout, Grid};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "q5_0",
    block_size: 32,
    block_bytes: 22,
    gpu: GpuLayout::Blocks {
        quant_at: 2,
        quant_words: 5,
        scales: &[(0, 2)],
    },
    ggml_type: 6,
    file_type: 8,
    fallback: None,
    budget: 0.055,
    decode,
    encode,
    grid: Some(Grid {
        affine: false,
        base_scales: |b| {
            let m = blocks::signed_max(b);
            (m / -16.0, Some(m / 15.0))
        },
        round,
        pack,
    }),
    sparse_values: None,
};

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(22)) {
        let d = blocks::f16_at(b, 0);
        for (o, q) in o.iter_mut().zip(blocks::q5_codes(b, 2)) {
            *o = d * q as f32 - 16.0 * d;
        }
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    blocks::encode_offset(x, out, 16.0, blocks::push_q5);
}

fn round(d: f32, _m: f32, w: f32) -> (u8, f32) {
    blocks::round_offset(d, w, 16.0)
}

fn pack(d: f32, _m: f32, q: &[u8; 32], out: &mut Vec<u8>) {
    blocks::push_f16(out, d);
    blocks::push_q5(out, q);
}
