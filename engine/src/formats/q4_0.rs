//! Q4_0: blocks of 32, w = d * (q - 8) with 4-bit q and an f16 d.

use super::{blocks, FormatSpec, GpuLayout, Grid};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "q4_0",
    block_size: 32,
    block_bytes: 18,
    gpu: GpuLayout::Blocks {
        quant_at: 2,
        quant_words: 4,
        scales: &[(0, 2)],
    },
    ggml_type: 2,
    file_type: 2,
    fallback: None,
    budget: 0.11,
    decode,
    encode,
    grid: Some(Grid {
        affine: false,
        // The grid -8..7 is lopsided: also try the largest magnitude on
        // the short side, which leaves the long side to the opposite sign.
        base_scales: |b| {
            let m = blocks::signed_max(b);
            (m / -8.0, Some(m / 7.0))
        },
        round,
        pack,
    }),
    sparse_values: Some(sparse_values),
};

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(18)) {
        let d = blocks::f16_at(b, 0);
        for (i, o) in o.iter_mut().enumerate() {
            *o = d * (blocks::nibble(b, 2, i) as f32 - 8.0);
        }
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    blocks::encode_offset(x, out, 8.0, blocks::push_nibbles);
}

fn round(d: f32, _m: f32, w: f32) -> (u8, f32) {
    blocks::round_offset(d, w, 8.0)
}

fn pack(d: f32, _m: f32, q: &[u8; 32], out: &mut Vec<u8>) {
    blocks::push_f16(out, d);
    blocks::push_nibbles(out, q);
}

fn sparse_values(bytes: &[u8]) -> (Vec<u32>, Vec<u32>) {
    blocks::sparse_nibble_words(bytes, 18, 2, |b| blocks::half_word(b, 0))
}
