//! Q5_1: blocks of 32, w = d * q + m with 5-bit q and f16 d, m.

use super::{blocks, FormatSpec, GpuLayout, Grid};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "q5_1",
    block_size: 32,
    block_bytes: 24,
    gpu: GpuLayout::Blocks {
        quant_at: 4,
        quant_words: 5,
        scales: &[(0, 4)],
    },
    ggml_type: 7,
    file_type: 9,
    fallback: None,
    budget: 0.05,
    decode,
    encode,
    grid: Some(Grid {
        affine: true,
        base_scales: |b| {
            let (lo, hi) = blocks::range(b);
            ((hi - lo) / 31.0, None)
        },
        round,
        pack,
    }),
    sparse_values: None,
};

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(24)) {
        let (d, m) = (blocks::f16_at(b, 0), blocks::f16_at(b, 2));
        for (o, q) in o.iter_mut().zip(blocks::q5_codes(b, 4)) {
            *o = d * q as f32 + m;
        }
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    blocks::encode_affine(x, out, 31.0, blocks::push_q5);
}

fn round(d: f32, m: f32, w: f32) -> (u8, f32) {
    blocks::round_affine(d, m, w, 31.0)
}

fn pack(d: f32, m: f32, q: &[u8; 32], out: &mut Vec<u8>) {
    blocks::push_f16(out, d);
    blocks::push_f16(out, m);
    blocks::push_q5(out, q);
}
