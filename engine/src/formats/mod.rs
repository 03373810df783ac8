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
}

/// IQ4_NL's non-linear 4-bit code book (ggml's `kvalues_iq4nl`).
pub const IQ4NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

impl WeightFormat {
    pub const ALL: [WeightFormat; 9] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::Q8_0,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::IQ4_NL,
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
        }
    }

    /// Weights per ggml block (1 for dense formats).
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
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
                // Nearest code-book value for a scale that maps the largest
                // magnitude onto the book's end (ggml refines this scale with a
                // search; this simpler choice stays inside the error budget).
                let max = b
                    .iter()
                    .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
                let d = max / -127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q = |v: f32| -> u8 {
                    let t = v * id;
                    (0..16u8)
                        .min_by(|a, b| {
                            (IQ4NL_VALUES[*a as usize] as f32 - t)
                                .abs()
                                .total_cmp(&(IQ4NL_VALUES[*b as usize] as f32 - t).abs())
                        })
                        .unwrap_or(0)
                };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                for i in 0..16 {
                    out.push(q(b[i]) | (q(b[i + 16]) << 4));
                }
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

/// Appends qh (bit i: high bit of weight i) and the nibbles of 32 5-bit values.
fn push_q5(out: &mut Vec<u8>, q: &[u8]) {
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
    let Some((qw, _)) = fmt.block_words() else {
        return Ok((data.chunks_exact(4).map(|c| word(c, 0)).collect(), 0));
    };
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

/// A weight matrix [n, k] on the GPU in `format`, as one or more row ranges.
/// A weight larger than the device's per-binding limit (WebGPU guarantees
/// only 128 MiB) is split by rows into parts that each fit; the ops launch
/// one dispatch per part, so kernels never see the split.
pub struct GpuWeight {
    pub format: WeightFormat,
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
            let label = if rows == n {
                name.to_string()
            } else {
                format!("{name}[{row0}..{}]", row0 + rows)
            };
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
            n,
            k,
            name: name.to_string(),
            parts,
        })
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
        let x: Vec<f32> = (0..32 * 97).map(|_| rng.normal()).collect();
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
