//! Q6_K: 256-weight super-blocks, 6-bit codes (ql nibbles, qh pairs), an
//! i8 scale per 16 weights and an f16 d at the end.

use super::{blocks, FormatSpec, GpuLayout, WeightFormat};
use half::f16;

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "q6_k",
    block_size: 256,
    block_bytes: 210,
    // quants: ql, qh; scales: 16 i8 scales, then d (the block's last two bytes)
    gpu: GpuLayout::Blocks {
        quant_at: 0,
        quant_words: 48,
        scales: &[(192, 4), (196, 4), (200, 4), (204, 4), (208, 2)],
    },
    ggml_type: 14,
    file_type: 18,
    fallback: Some(WeightFormat::Q8_0),
    budget: 0.025,
    decode,
    encode,
    grid: None,
    sparse_values: None,
};

/// Weight `i` of a Q6_K block: (low 4 bits, high 2 bits, sub-block scale),
/// following ggml's `dequantize_row_q6_K` layout.
fn parts(b: &[u8], i: usize) -> (u32, u32, i8) {
    let (h, g, l) = (i / 128, (i % 128) / 32, i % 32);
    let qlb = b[64 * h + 32 * (g % 2) + l];
    let ql = if g < 2 { qlb & 15 } else { qlb >> 4 } as u32;
    let qh = ((b[128 + 32 * h + l] >> (2 * g)) & 3) as u32;
    let sc = b[192 + 8 * h + l / 16 + 2 * g] as i8;
    (ql, qh, sc)
}

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(256).zip(data.chunks_exact(210)) {
        let d = blocks::f16_at(b, 208);
        for (i, o) in o.iter_mut().enumerate() {
            let (ql, qh, sc) = parts(b, i);
            *o = d * sc as f32 * ((ql | (qh << 4)) as i32 - 32) as f32;
        }
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(256) {
        let scale: [f32; 16] = std::array::from_fn(|k| {
            b[16 * k..16 * k + 16]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()))
                / 31.0
        });
        let d = f16::from_f32(scale.iter().fold(0f32, |m, v| m.max(*v)) / 127.0);
        let sc: [i8; 16] = std::array::from_fn(|k| {
            if d.to_f32() > 0.0 {
                (scale[k] / d.to_f32()).round().clamp(-128.0, 127.0) as i8
            } else {
                0
            }
        });
        let mut blk = [0u8; 210];
        for i in 0..256 {
            let step = d.to_f32() * sc[i / 16] as f32;
            let q = if step != 0.0 {
                (b[i] / step).round().clamp(-32.0, 31.0) as i32
            } else {
                0
            } + 32;
            let (h, g, l) = (i / 128, (i % 128) / 32, i % 32);
            blk[64 * h + 32 * (g % 2) + l] |= ((q & 15) as u8) << (if g < 2 { 0 } else { 4 });
            blk[128 + 32 * h + l] |= ((q >> 4) as u8 & 3) << (2 * g);
        }
        for k in 0..16 {
            blk[192 + k] = sc[k] as u8;
        }
        blk[208..210].copy_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&blk);
    }
}
