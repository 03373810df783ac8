//! Weight formats: ggml block layouts, their CPU decode (the reference), the
//! CPU quantizers, and the repacking into the GPU layout the WGSL helpers in
//! `shaders/formats/` read.
//!
//! GPU layout: a weight [n, k] is one `u32` buffer. Dense formats are their
//! row-major values (f16 two per word). Block formats are repacked at load
//! time into the quant words of every block (row-major by block), followed by
//! one word per block with the f16 scale(s) exactly as ggml stores them. ggml's
//! Q8_0 (34 bytes) and Q4_0 (18 bytes) blocks are not 4-byte aligned and WGSL
//! has no byte loads, so we repack once instead of shifting at every read.

use crate::gpu::{Gpu, Tensor};
use crate::{Error, Result};
use half::f16;

pub mod sparse;
pub use sparse::{Pattern, SparseFormat, SparseTensor};

/// A weight format the kernels can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum WeightFormat {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    IQ4_NL,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// IQ4_NL's non-linear 4-bit code book (ggml's `kvalues_iq4nl`).
pub const IQ4NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

impl WeightFormat {
    pub const ALL: [WeightFormat; 12] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::Q8_0,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::IQ4_NL,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
    ];

    /// Name used in shader file names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::IQ4_NL => "iq4_nl",
            Self::Q4_K => "q4_k",
            Self::Q5_K => "q5_k",
            Self::Q6_K => "q6_k",
        }
    }

    /// Weights per ggml block (1 for dense formats).
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_K | Self::Q5_K | Self::Q6_K => 256,
            _ => 32,
        }
    }

    /// Bytes per ggml block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q8_0 => 34,
            Self::Q4_0 | Self::IQ4_NL => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q4_K => 144,
            Self::Q5_K => 176,
            Self::Q6_K => 210,
        }
    }

    /// Row length the kernels need a multiple of: a block, or 8 weights (one
    /// kernel unit) for dense formats.
    pub fn row_multiple(self) -> usize {
        self.block_size().max(8)
    }

    /// Bytes of ggml data for `n_elements` weights.
    pub fn ggml_bytes(self, n_elements: usize) -> usize {
        n_elements / self.block_size() * self.block_bytes()
    }

    /// Bytes of the repacked GPU buffer for `n_elements` weights.
    pub fn gpu_bytes(self, n_elements: usize) -> usize {
        match self.block_words() {
            None => self.ggml_bytes(n_elements).next_multiple_of(4),
            Some((q, sc)) => n_elements / self.block_size() * (q + sc) * 4,
        }
    }

    /// GPU layout of a block format: (quant words, scale words) per block.
    /// `None` for dense formats.
    pub fn block_words(self) -> Option<(usize, usize)> {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => None,
            Self::Q8_0 => Some((8, 1)),
            Self::Q4_0 | Self::Q4_1 | Self::IQ4_NL => Some((4, 1)),
            Self::Q5_0 | Self::Q5_1 => Some((5, 1)),
            // quants: qs (+ qh); scales: (d, dmin) and the 12 packed scale bytes
            Self::Q4_K => Some((32, 4)),
            Self::Q5_K => Some((40, 4)),
            // quants: ql, qh; scales: 16 i8 scales, then d
            Self::Q6_K => Some((48, 5)),
        }
    }

    /// Bits per weight in the ggml file.
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_size() as f64
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes ggml `data` holding `out.len()` weights into f32 (the CPU reference).
pub fn dequantize(fmt: WeightFormat, data: &[u8], out: &mut [f32]) -> Result<()> {
    let need = fmt.ggml_bytes(out.len());
    if out.len() % fmt.block_size() != 0 || data.len() < need {
        return Err(Error::Shape {
            op: "dequantize",
            msg: format!(
                "{}: {} weights need {} bytes in whole blocks of {}, got {} bytes",
                fmt.name(),
                out.len(),
                need,
                fmt.block_size(),
                data.len()
            ),
        });
    }
    match fmt {
        WeightFormat::F32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WeightFormat::F16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        WeightFormat::BF16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        WeightFormat::Q5_0 | WeightFormat::Q5_1 => {
            let bb = fmt.block_bytes();
            for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                let (m, h) = if fmt == WeightFormat::Q5_1 {
                    (f16_at(b, 2), 4)
                } else {
                    (-16.0 * d, 2)
                };
                let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
                for i in 0..16 {
                    let q = b[h + 4 + i];
                    let lo = (q & 15) as u32 | (((qh >> i) & 1) << 4);
                    let hi = (q >> 4) as u32 | (((qh >> (i + 16)) & 1) << 4);
                    o[i] = d * lo as f32 + m;
                    o[i + 16] = d * hi as f32 + m;
                }
            }
        }
        WeightFormat::Q4_K | WeightFormat::Q5_K => {
            let bb = fmt.block_bytes();
            for (o, b) in out.chunks_exact_mut(256).zip(data.chunks_exact(bb)) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let (qh, qs) = if fmt == WeightFormat::Q5_K {
                    (&b[16..48], &b[48..176])
                } else {
                    (&b[0..0], &b[16..144])
                };
                for s in 0..8 {
                    let (sc, m) = k_scale_min(s, scales);
                    let (d1, m1) = (d * sc as f32, dmin * m as f32);
                    for l in 0..32 {
                        let byte = qs[32 * (s / 2) + l];
                        let mut q = if s % 2 == 0 { byte & 15 } else { byte >> 4 } as u32;
                        if !qh.is_empty() {
                            q |= ((qh[l] as u32 >> s) & 1) << 4;
                        }
                        o[32 * s + l] = d1 * q as f32 - m1;
                    }
                }
            }
        }
        WeightFormat::Q6_K => {
            for (o, b) in out.chunks_exact_mut(256).zip(data.chunks_exact(210)) {
                let d = f16_at(b, 208);
                for i in 0..256 {
                    let (ql, qh, sc) = q6k_parts(b, i);
                    o[i] = d * sc as f32 * ((ql | (qh << 4)) as i32 - 32) as f32;
                }
            }
        }
        WeightFormat::IQ4_NL => {
            for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for i in 0..16 {
                    o[i] = d * IQ4NL_VALUES[(b[2 + i] & 15) as usize] as f32;
                    o[i + 16] = d * IQ4NL_VALUES[(b[2 + i] >> 4) as usize] as f32;
                }
            }
        }
        WeightFormat::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for i in 0..32 {
                    o[i] = d * (b[2 + i] as i8) as f32;
                }
            }
        }
        WeightFormat::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for i in 0..16 {
                    o[i] = d * ((b[2 + i] & 15) as f32 - 8.0);
                    o[i + 16] = d * ((b[2 + i] >> 4) as f32 - 8.0);
                }
            }
        }
        WeightFormat::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(20)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for i in 0..16 {
                    o[i] = d * (b[4 + i] & 15) as f32 + m;
                    o[i + 16] = d * (b[4 + i] >> 4) as f32 + m;
                }
            }
        }
    }
    Ok(())
}

/// Quantizes `x` (a whole number of blocks) into ggml bytes, following ggml's
/// reference quantizers (`quantize_row_*_ref`) so files are interchangeable.
pub fn quantize(fmt: WeightFormat, x: &[f32]) -> Result<Vec<u8>> {
    if x.len() % fmt.block_size() != 0 {
        return Err(Error::Shape {
            op: "quantize",
            msg: format!(
                "{}: {} weights are not whole blocks of {}",
                fmt.name(),
                x.len(),
                fmt.block_size()
            ),
        });
    }
    let mut out = Vec::with_capacity(fmt.ggml_bytes(x.len()));
    match fmt {
        WeightFormat::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        WeightFormat::F16 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        WeightFormat::BF16 => x.iter().for_each(|v| {
            // Round to nearest even, as ggml's fp32_to_bf16 does (NaN kept quiet).
            let b = v.to_bits();
            let h = if v.is_nan() {
                (b >> 16) | 64
            } else {
                (b + (0x7fff + ((b >> 16) & 1))) >> 16
            };
            out.extend_from_slice(&(h as u16).to_le_bytes());
        }),
        WeightFormat::Q5_0 => {
            for b in x.chunks_exact(32) {
                let max = b
                    .iter()
                    .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
                let d = max / -16.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<u8> = b
                    .iter()
                    .map(|v| ((v * id + 16.5) as i32).clamp(0, 31) as u8)
                    .collect();
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                push_q5(&mut out, &q);
            }
        }
        WeightFormat::Q5_1 => {
            for b in x.chunks_exact(32) {
                let min = b.iter().fold(f32::INFINITY, |m, v| m.min(*v));
                let max = b.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                let d = (max - min) / 31.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<u8> = b
                    .iter()
                    .map(|v| (((v - min) * id + 0.5) as i32).clamp(0, 31) as u8)
                    .collect();
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                push_q5(&mut out, &q);
            }
        }
        WeightFormat::IQ4_NL => {
            for b in x.chunks_exact(32) {
                let d = iq4nl_scale(b);
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                for i in 0..16 {
                    out.push(iq4nl_index(id * b[i]) | (iq4nl_index(id * b[i + 16]) << 4));
                }
            }
        }
        WeightFormat::Q4_K | WeightFormat::Q5_K => {
            // Per 32-weight sub-block an affine (scale, min) from its range,
            // both quantized to 6 bits against the super-block's f16 d/dmin
            // (ggml's layout; ggml additionally refines each pair by search).
            let nmax = if fmt == WeightFormat::Q5_K {
                31.0
            } else {
                15.0
            };
            for b in x.chunks_exact(256) {
                let mut scale = [0f32; 8];
                let mut min = [0f32; 8];
                for s in 0..8 {
                    let sb = &b[32 * s..32 * s + 32];
                    let lo = sb.iter().fold(0f32, |m, v| m.min(*v));
                    let hi = sb.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                    scale[s] = (hi - lo) / nmax;
                    min[s] = -lo;
                }
                let d = f16::from_f32(scale.iter().fold(0f32, |m, v| m.max(*v)) / 63.0);
                let dmin = f16::from_f32(min.iter().fold(0f32, |m, v| m.max(*v)) / 63.0);
                let q6 = |v: f32, unit: f32| {
                    if unit > 0.0 {
                        (v / unit).round().clamp(0.0, 63.0) as u8
                    } else {
                        0
                    }
                };
                let sc: [u8; 8] = std::array::from_fn(|s| q6(scale[s], d.to_f32()));
                let mn: [u8; 8] = std::array::from_fn(|s| q6(min[s], dmin.to_f32()));
                out.extend_from_slice(&d.to_le_bytes());
                out.extend_from_slice(&dmin.to_le_bytes());
                out.extend_from_slice(&k_pack_scales(&sc, &mn));
                let mut qh = [0u8; 32];
                let mut qs = [0u8; 128];
                for s in 0..8 {
                    let step = d.to_f32() * sc[s] as f32;
                    let off = dmin.to_f32() * mn[s] as f32;
                    for l in 0..32 {
                        let q = if step > 0.0 {
                            ((b[32 * s + l] + off) / step).round().clamp(0.0, nmax) as u8
                        } else {
                            0
                        };
                        qs[32 * (s / 2) + l] |= (q & 15) << (4 * (s % 2));
                        qh[l] |= (q >> 4) << s;
                    }
                }
                if fmt == WeightFormat::Q5_K {
                    out.extend_from_slice(&qh);
                }
                out.extend_from_slice(&qs);
            }
        }
        WeightFormat::Q6_K => {
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
                    blk[64 * h + 32 * (g % 2) + l] |=
                        ((q & 15) as u8) << (if g < 2 { 0 } else { 4 });
                    blk[128 + 32 * h + l] |= ((q >> 4) as u8 & 3) << (2 * g);
                }
                for k in 0..16 {
                    blk[192 + k] = sc[k] as u8;
                }
                blk[208..210].copy_from_slice(&d.to_le_bytes());
                out.extend_from_slice(&blk);
            }
        }
        WeightFormat::Q8_0 => {
            for b in x.chunks_exact(32) {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
            }
        }
        WeightFormat::Q4_0 => {
            for b in x.chunks_exact(32) {
                // The signed value of largest magnitude maps to -8.
                let max = b
                    .iter()
                    .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                for i in 0..16 {
                    out.push(q(b[i]) | (q(b[i + 16]) << 4));
                }
            }
        }
        WeightFormat::Q4_1 => {
            for b in x.chunks_exact(32) {
                let min = b.iter().fold(f32::INFINITY, |m, v| m.min(*v));
                let max = b.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                for i in 0..16 {
                    out.push(q(b[i]) | (q(b[i + 16]) << 4));
                }
            }
        }
    }
    Ok(out)
}

/// The code-book entry nearest `x` (ggml's `best_index_int8`: a bisection,
/// ties to the upper entry), as the cache's append kernel computes it.
pub fn iq4nl_index(x: f32) -> u8 {
    let v = |i: usize| IQ4NL_VALUES[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < v(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - v(hi - 1) < v(hi) - x {
        (hi - 1) as u8
    } else {
        hi as u8
    }
}

/// The scale of a 32-value IQ4_NL block as ggml's reference quantizer
/// chooses it: the least-squares scale (weights x^2) of the codes for the
/// plain max scale and for 15 nearby scales, the best fit kept. Written
/// step for step as shaders/ops/rope_kv.wgsl does it, so the cache's GPU
/// encoding matches bit for bit.
pub fn iq4nl_scale(b: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for v in b {
        if v.abs() > amax {
            amax = v.abs();
            max = *v;
        }
    }
    if amax < 1e-15 {
        return 0.0;
    }
    let fit = |id: f32| -> (f32, f32) {
        let (mut sqx, mut sq2) = (0f32, 0f32);
        for v in b {
            let q = IQ4NL_VALUES[iq4nl_index(id * v) as usize] as f32;
            let w = v * v;
            sqx += w * q * v;
            sq2 += w * q * q;
        }
        (sqx, sq2)
    };
    let (sqx, sq2) = fit(1.0 / (max / 127.0));
    let mut d = sqx / sq2;
    let mut best = d * sqx;
    for t in -7i32..=7 {
        let (sqx, sq2) = fit((t - 127) as f32 / max);
        if sq2 > 0.0 && sqx * sqx > best * sq2 {
            d = sqx / sq2;
            best = d * sqx;
        }
    }
    d
}

/// Sub-block `j`'s 6-bit scale and min from the 12 packed bytes of a
/// Q4_K/Q5_K super-block (ggml's `get_scale_min_k4`).
pub fn k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit (scale, min) pairs the way `k_scale_min` reads them.
fn k_pack_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            q[j] = sc[j];
            q[j + 4] = m[j];
        } else {
            q[j + 4] = (sc[j] & 15) | ((m[j] & 15) << 4);
            q[j - 4] |= (sc[j] >> 4) << 6;
            q[j] |= (m[j] >> 4) << 6;
        }
    }
    q
}

/// Weight `i` of a Q6_K block: (low 4 bits, high 2 bits, sub-block scale),
/// following ggml's `dequantize_row_q6_K` layout.
fn q6k_parts(b: &[u8], i: usize) -> (u32, u32, i8) {
    let (h, g, l) = (i / 128, (i % 128) / 32, i % 32);
    let qlb = b[64 * h + 32 * (g % 2) + l];
    let ql = if g < 2 { qlb & 15 } else { qlb >> 4 } as u32;
    let qh = ((b[128 + 32 * h + l] >> (2 * g)) & 3) as u32;
    let sc = b[192 + 8 * h + l / 16 + 2 * g] as i8;
    (ql, qh, sc)
}

/// Appends qh (bit i: high bit of weight i) and the nibbles of 32 5-bit values.
pub fn push_q5(out: &mut Vec<u8>, q: &[u8]) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (i, v)| h | (((*v as u32) >> 4) << i));
    out.extend_from_slice(&qh.to_le_bytes());
    for i in 0..16 {
        out.push((q[i] & 15) | ((q[i + 16] & 15) << 4));
    }
}

/// ggml bytes of a [n, k] weight repacked into GPU words, and the word
/// offset of the scale region (0 for dense formats).
pub fn repack(fmt: WeightFormat, data: &[u8], n: usize, k: usize) -> Result<(Vec<u32>, u32)> {
    let need = fmt.ggml_bytes(n * k);
    if k % fmt.row_multiple() != 0 || data.len() != need {
        return Err(Error::Shape {
            op: "repack",
            msg: format!(
                "{} weight [{n}, {k}]: rows must be a multiple of {} and the data {} bytes, got {} bytes",
                fmt.name(),
                fmt.row_multiple(),
                need,
                data.len()
            ),
        });
    }
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let half_word = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u32;
    let Some((qw, sw)) = fmt.block_words() else {
        return Ok((data.chunks_exact(4).map(|c| word(c, 0)).collect(), 0));
    };
    if let Some((qoff, soffs)) = match fmt {
        // (byte offset of the quant words, byte offsets of the scale words)
        WeightFormat::Q4_K => Some((16, vec![0, 4, 8, 12])),
        WeightFormat::Q5_K => Some((16, vec![0, 4, 8, 12])),
        WeightFormat::Q6_K => Some((0, vec![192, 196, 200, 204, 208])),
        _ => None,
    } {
        let nb = n * k / fmt.block_size();
        let mut words = Vec::with_capacity(nb * (qw + sw));
        for b in data.chunks_exact(fmt.block_bytes()) {
            for j in 0..qw {
                words.push(word(b, qoff + 4 * j));
            }
        }
        for b in data.chunks_exact(fmt.block_bytes()) {
            for &o in &soffs {
                // Q6_K's d is the block's last two bytes.
                words.push(if o + 4 <= b.len() {
                    word(b, o)
                } else {
                    half_word(b, o)
                });
            }
        }
        return Ok((words, (nb * qw) as u32));
    }
    // Where the quant words start in the ggml block, and whether the scale
    // word is a lone f16 (d) or two (d, m): both are copied bit for bit.
    let (qoff, two_halves) = match fmt {
        WeightFormat::Q4_1 | WeightFormat::Q5_1 => (4, true),
        _ => (2, false),
    };
    let nb = n * k / fmt.block_size();
    let bb = fmt.block_bytes();
    let mut words = Vec::with_capacity(nb * (qw + 1));
    for b in data.chunks_exact(bb) {
        for j in 0..qw {
            words.push(word(b, qoff + 4 * j));
        }
    }
    for b in data.chunks_exact(bb) {
        words.push(if two_halves {
            word(b, 0)
        } else {
            half_word(b, 0)
        });
    }
    Ok((words, (nb * qw) as u32))
}

/// The defines that pick a decoder: `FORMAT` names the shader in
/// `shaders/formats/`; sparse weights add their value format and pattern kind.
pub fn format_defines(
    format: WeightFormat,
    sparse: Option<SparseFormat>,
) -> Vec<(&'static str, String)> {
    match sparse {
        None => vec![("FORMAT", format.name().to_string())],
        Some(s) => vec![
            ("FORMAT", "sparse".to_string()),
            ("SPARSE_VALUES", s.values.name().to_string()),
            (
                "SPARSE_NM",
                (if matches!(s.pattern, Pattern::NM { .. }) {
                    "1"
                } else {
                    "0"
                })
                .to_string(),
            ),
        ],
    }
}

/// A part's buffer label: the weight's name, with its rows when split.
fn part_label(name: &str, row0: usize, rows: usize, n: usize) -> String {
    if rows == n {
        name.to_string()
    } else {
        format!("{name}[{row0}..{}]", row0 + rows)
    }
}

/// A weight matrix [n, k] on the GPU in `format`, as one or more row ranges.
/// A weight larger than the device's per-binding limit (WebGPU guarantees
/// only 128 MiB) is split by rows into parts that each fit; the ops launch
/// one dispatch per part, so kernels never see the split.
pub struct GpuWeight {
    /// The format of the values (of the kept values when sparse).
    pub format: WeightFormat,
    /// Set when only some weights are stored (shaders/formats/sparse.wgsl).
    pub sparse: Option<SparseFormat>,
    pub n: usize,
    pub k: usize,
    pub name: String,
    pub parts: Vec<WeightPart>,
}

/// Rows [row0, row0 + rows) of a weight in one buffer.
pub struct WeightPart {
    pub row0: usize,
    pub rows: usize,
    /// Word offset of the scale region in `data`.
    pub soff: u32,
    pub data: Tensor,
}

impl GpuWeight {
    /// Uploads ggml-layout `data` for a [n, k] weight named `name`.
    pub fn upload(
        gpu: &Gpu,
        name: &str,
        fmt: WeightFormat,
        data: &[u8],
        n: usize,
        k: usize,
    ) -> Result<GpuWeight> {
        let werr = |msg: String| Error::Weight {
            name: name.to_string(),
            msg,
        };
        if k == 0 || k % fmt.row_multiple() != 0 || data.len() != fmt.ggml_bytes(n * k) {
            return Err(werr(format!(
                "{} weight [{n}, {k}]: rows must be a non-zero multiple of {} and the data {} bytes, got {} bytes",
                fmt.name(),
                fmt.row_multiple(),
                fmt.ggml_bytes(n * k),
                data.len()
            )));
        }
        let row_gpu = fmt.gpu_bytes(k) as u64;
        let max_rows = (gpu.max_binding() / row_gpu) as usize;
        if max_rows == 0 {
            return Err(Error::BindingTooLarge {
                what: format!("one row of weight `{name}`"),
                needed: row_gpu,
                limit: gpu.max_binding(),
            });
        }
        let row_ggml = fmt.ggml_bytes(k);
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < n {
            let rows = max_rows.min(n - row0);
            let bytes = &data[row0 * row_ggml..(row0 + rows) * row_ggml];
            let (words, soff) = repack(fmt, bytes, rows, k).map_err(|e| werr(e.to_string()))?;
            let label = part_label(name, row0, rows, n);
            parts.push(WeightPart {
                row0,
                rows,
                soff,
                data: gpu.upload(&label, &words)?,
            });
            row0 += rows;
        }
        Ok(GpuWeight {
            format: fmt,
            sparse: None,
            n,
            k,
            name: name.to_string(),
            parts,
        })
    }

    /// Uploads a sparse weight, split by rows as dense ones are.
    pub fn upload_sparse(gpu: &Gpu, name: &str, t: &SparseTensor) -> Result<GpuWeight> {
        let werr = |e: Error| Error::Weight {
            name: name.to_string(),
            msg: e.to_string(),
        };
        t.validate().map_err(werr)?;
        // Rows keep different counts, so parts grow row by row up to the limit.
        let limit = gpu.max_binding();
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < t.n {
            let mut bytes = ((sparse::HEADER_WORDS + sparse::PAD_WORDS) * 4) as u64;
            let mut rows = 0;
            while row0 + rows < t.n && bytes + t.row_gpu_bytes(row0 + rows) as u64 <= limit {
                bytes += t.row_gpu_bytes(row0 + rows) as u64;
                rows += 1;
            }
            if rows == 0 {
                return Err(Error::BindingTooLarge {
                    what: format!("one row of weight `{name}`"),
                    needed: bytes + t.row_gpu_bytes(row0) as u64,
                    limit,
                });
            }
            let words = t.gpu_words(row0, rows).map_err(werr)?;
            let label = part_label(name, row0, rows, t.n);
            parts.push(WeightPart {
                row0,
                rows,
                soff: 0,
                data: gpu.upload(&label, &words)?,
            });
            row0 += rows;
        }
        Ok(GpuWeight {
            format: t.format.values,
            sparse: Some(t.format),
            n: t.n,
            k: t.k,
            name: name.to_string(),
            parts,
        })
    }

    /// The defines that pick this weight's decoder in a kernel.
    pub fn shader_defines(&self) -> Vec<(&'static str, String)> {
        format_defines(self.format, self.sparse)
    }

    /// Bytes the kernels read for one full pass over the weight.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.data.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Rng;

    /// Error budget of each format against the dense weights, as the RMS of the
    /// decode error relative to the RMS of the weights, on Gaussian data. These
    /// are the numbers a change to a quantizer must not make worse.
    #[test]
    fn error_budget_per_format() {
        let mut rng = Rng::new(7);
        let x: Vec<f32> = (0..256 * 13).map(|_| rng.normal()).collect();
        for (fmt, budget) in [
            (WeightFormat::F32, 0.0),
            (WeightFormat::F16, 5e-4),
            (WeightFormat::Q8_0, 0.007),
            (WeightFormat::Q4_1, 0.10),
            (WeightFormat::Q4_0, 0.11),
            (WeightFormat::BF16, 3e-3),
            (WeightFormat::Q5_0, 0.055),
            (WeightFormat::Q5_1, 0.05),
            (WeightFormat::IQ4_NL, 0.10),
            (WeightFormat::Q4_K, 0.10),
            (WeightFormat::Q5_K, 0.05),
            (WeightFormat::Q6_K, 0.025),
        ] {
            let q = quantize(fmt, &x).unwrap();
            assert_eq!(q.len(), fmt.ggml_bytes(x.len()));
            let mut y = vec![0f32; x.len()];
            dequantize(fmt, &q, &mut y).unwrap();
            let err: f64 = x
                .iter()
                .zip(&y)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
            let sig: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
            let rel = (err / sig).sqrt();
            eprintln!("{}: relative RMS error {rel:.4}", fmt.name());
            assert!(
                rel <= budget,
                "{}: relative RMS error {rel} > budget {budget}",
                fmt.name()
            );
        }
    }

    #[test]
    fn repack_rejects_bad_shapes() {
        assert!(repack(WeightFormat::Q4_1, &[0u8; 20], 1, 16).is_err());
        assert!(repack(WeightFormat::Q4_1, &[0u8; 19], 1, 32).is_err());
        assert!(repack(WeightFormat::F32, &[0u8; 4 * 12], 1, 12).is_err());
    }
}
