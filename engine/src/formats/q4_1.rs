//! Q4_1: blocks of 32, w = d * q + m with 4-bit q and f16 d, m.

use super::{blocks, FormatSpec, GpuLayout, Grid};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "q4_1",
    block_size: 32,
    block_bytes: 20,
    gpu: GpuLayout::Blocks {
        quant_at: 4,
        quant_words: 4,
        scales: &[(0, 4)],
    },
    ggml_type: 3,
    file_type: 3,
    fallback: None,
    budget: 0.10,
    decode,
    encode,
    grid: Some(Grid {
        affine: true,
        base_scales: |b| {
            let (lo, hi) = blocks::range(b);
            ((hi - lo) / 15.0, None)
        },
        round,
        pack,
    }),
    sparse_values: Some(sparse_values),
};

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(20)) {
        let (d, m) = (blocks::f16_at(b, 0), blocks::f16_at(b, 2));
        for (i, o) in o.iter_mut().enumerate() {
            *o = d * blocks::nibble(b, 4, i) as f32 + m;
        }
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    blocks::encode_affine(x, out, 15.0, blocks::push_nibbles);
}

fn round(d: f32, m: f32, w: f32) -> (u8, f32) {
    blocks::round_affine(d, m, w, 15.0)
}

fn pack(d: f32, m: f32, q: &[u8; 32], out: &mut Vec<u8>) {
    blocks::push_f16(out, d);
    blocks::push_f16(out, m);
    blocks::push_nibbles(out, q);
}

fn sparse_values(bytes: &[u8]) -> (Vec<u32>, Vec<u32>) {
    blocks::sparse_nibble_words(bytes, 20, 4, |b| blocks::word(b, 0))
}
