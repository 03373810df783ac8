//! Q8_0: blocks of 32, w = d * q with q an i8 and d an f16.

use super::{blocks, FormatSpec, GpuLayout, Grid};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "q8_0",
    block_size: 32,
    block_bytes: 34,
    gpu: GpuLayout::Blocks {
        quant_at: 2,
        quant_words: 8,
        scales: &[(0, 2)],
    },
    ggml_type: 8,
    file_type: 7,
    fallback: None,
    budget: 0.007,
    decode,
    encode,
    grid: Some(Grid {
        affine: false,
        base_scales: |b| (blocks::signed_max(b).abs() / 127.0, None),
        round,
        pack,
    }),
    sparse_values: Some(sparse_values),
};

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(34)) {
        let d = blocks::f16_at(b, 0);
        for i in 0..32 {
            o[i] = d * (b[2 + i] as i8) as f32;
        }
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        blocks::push_f16(out, d);
        out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
    }
}

fn round(d: f32, _m: f32, w: f32) -> (u8, f32) {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = (w * id).round().clamp(-127.0, 127.0);
    (q as i8 as u8, d * q)
}

fn pack(d: f32, _m: f32, q: &[u8; 32], out: &mut Vec<u8>) {
    blocks::push_f16(out, d);
    out.extend_from_slice(q);
}

/// Kept values four to a word, then one scale word a block.
fn sparse_values(bytes: &[u8]) -> (Vec<u32>, Vec<u32>) {
    let (mut vals, mut scales) = (Vec::new(), Vec::new());
    for b in bytes.chunks_exact(34) {
        vals.extend((0..8).map(|j| blocks::word(b, 2 + 4 * j)));
        scales.push(blocks::half_word(b, 0));
    }
    (vals, scales)
}
