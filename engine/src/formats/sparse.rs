//! Sparse weights: a bitmask of kept columns plus the kept values stored in
//! one of our block formats, so sparsity and quantization compose.
//!
//! Layout of a [n, k] tensor (k a multiple of 32), the same in files and,
//! plus a header and group offsets, on the GPU:
//! - `mask`: n * k/32 words; bit j of word c of row r set when column
//!   32c + j of row r is kept.
//! - `values`: per row, its kept values in column order, padded with zeros
//!   to a multiple of [`VALUE_BLOCK`], all rows one after the other and
//!   encoded as ggml blocks of the value format. A block never straddles
//!   two rows, so a weight splits by rows without re-encoding.
//!
//! N:M patterns (N of every M consecutive columns kept, M in {4, 8}) use the
//! same mask: one bit per column is what 2:4's 2-bit in-group indices cost
//! too, and less than 3-bit indices for M = 8 with N >= 3. A fixed count per
//! group means a kernel finds a unit's values by arithmetic alone.
//! Unstructured masks need a prefix count: the GPU layout adds the kept
//! index of every [`GROUP_COLS`]-column group (1/8 bit per weight), and a
//! kernel counts bits inside the group (at most 7 `countOneBits`).

use super::{dequantize, quantize, WeightFormat};
use crate::{Error, Result};

/// Kept values per row are padded to a whole number of these (one block of
/// the 32-weight value formats).
pub const VALUE_BLOCK: usize = 32;
/// Columns per stored group offset in the GPU layout of unstructured weights.
pub const GROUP_COLS: usize = 256;
/// Words of the GPU header: mask, group-offset, value and scale word
/// offsets, kept values per 8-column unit and per row (N:M only), padding.
pub const HEADER_WORDS: usize = 8;
/// Zero words after a GPU part: a unit's decoder reads a fixed window from
/// its first value (5 words of f16 values, which may start one past the
/// last value when the unit keeps none) and the next block's scale.
pub const PAD_WORDS: usize = 5;
/// Value formats a sparse tensor can store its kept values in: those whose
/// module declares `sparse_values`.
pub fn value_formats() -> Vec<WeightFormat> {
    WeightFormat::ALL
        .into_iter()
        .filter(|f| f.holds_sparse_values())
        .collect()
}

/// Which columns a row may keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Exactly `n` of every `m` consecutive columns.
    NM { n: u32, m: u32 },
    /// Any columns.
    Unstructured,
}

impl Pattern {
    /// Parses "2:4" or "unstructured".
    pub fn parse(s: &str) -> Result<Pattern> {
        let bad = || Error::Shape {
            op: "sparse pattern",
            msg: format!("`{s}` is not `unstructured` or N:M with M of 4 or 8 and 0 < N < M"),
        };
        if s.eq_ignore_ascii_case("unstructured") {
            return Ok(Pattern::Unstructured);
        }
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        let (n, m) = (
            a.trim().parse::<u32>().map_err(|_| bad())?,
            b.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if !(m == 4 || m == 8) || n == 0 || n >= m {
            return Err(bad());
        }
        Ok(Pattern::NM { n, m })
    }

    pub fn name(self) -> String {
        match self {
            Pattern::NM { n, m } => format!("{n}:{m}"),
            Pattern::Unstructured => "unstructured".into(),
        }
    }
}

/// A sparse pattern with the format of its kept values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SparseFormat {
    pub pattern: Pattern,
    pub values: WeightFormat,
}

impl SparseFormat {
    pub fn new(pattern: Pattern, values: WeightFormat) -> Result<SparseFormat> {
        if !values.holds_sparse_values() {
            return Err(Error::Shape {
                op: "sparse format",
                msg: format!(
                    "kept values cannot be {}: one of {}",
                    values.name(),
                    value_formats()
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(SparseFormat { pattern, values })
    }

    /// "2:4/q4_0", "unstructured/q8_0".
    pub fn name(self) -> String {
        format!("{}/{}", self.pattern.name(), self.values.name())
    }
}

/// The mask words of a row-major [n, k] keep-mask.
fn mask_of(n: usize, k: usize, keep: &[bool]) -> Result<Vec<u32>> {
    if k == 0 || k % 32 != 0 || keep.len() != n * k {
        return Err(shape_err(format!(
            "[{n}, {k}]: rows must be a non-zero multiple of 32 and the mask {} values, got {}",
            n * k,
            keep.len()
        )));
    }
    let words = k / 32;
    let mut mask = vec![0u32; n * words];
    for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
        mask[i / k * words + i % k / 32] |= 1 << (i % 32);
    }
    Ok(mask)
}

fn shape_err(msg: String) -> Error {
    Error::Shape {
        op: "sparse tensor",
        msg,
    }
}

/// A sparse [n, k] weight in the file layout (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct SparseTensor {
    pub format: SparseFormat,
    pub n: usize,
    pub k: usize,
    pub mask: Vec<u32>,
    pub values: Vec<u8>,
}

impl SparseTensor {
    /// Packs dense row-major `w` keeping the columns where `keep` is true;
    /// the kept values are then quantized in the value format.
    pub fn from_dense(
        format: SparseFormat,
        n: usize,
        k: usize,
        w: &[f32],
        keep: &[bool],
    ) -> Result<SparseTensor> {
        if w.len() != n * k {
            return Err(shape_err(format!(
                "[{n}, {k}]: {} weights, expected {}",
                w.len(),
                n * k
            )));
        }
        let mask = mask_of(n, k, keep)?;
        let mut kept = Vec::new();
        for r in 0..n {
            let start = kept.len();
            kept.extend((0..k).filter(|c| keep[r * k + c]).map(|c| w[r * k + c]));
            kept.resize(
                start + (kept.len() - start).next_multiple_of(VALUE_BLOCK),
                0.0,
            );
        }
        let values = quantize(format.values, &kept)?;
        Self::from_parts(format, n, k, mask, values)
    }

    /// A tensor from its mask and the kept values already encoded (each
    /// row's padded to whole blocks), as a joint prune-and-quantize pass
    /// writes them; checked like a file's.
    pub fn from_encoded(
        format: SparseFormat,
        n: usize,
        k: usize,
        keep: &[bool],
        values: Vec<u8>,
    ) -> Result<SparseTensor> {
        let mask = mask_of(n, k, keep)?;
        Self::from_parts(format, n, k, mask, values)
    }

    fn from_parts(
        format: SparseFormat,
        n: usize,
        k: usize,
        mask: Vec<u32>,
        values: Vec<u8>,
    ) -> Result<SparseTensor> {
        let t = SparseTensor {
            format,
            n,
            k,
            mask,
            values,
        };
        t.validate()?;
        Ok(t)
    }

    /// Kept values of row `r`.
    pub fn row_kept(&self, r: usize) -> usize {
        let words = self.k / 32;
        self.mask[r * words..(r + 1) * words]
            .iter()
            .map(|m| m.count_ones() as usize)
            .sum()
    }

    /// Index of each row's first value in the value stream, and the total.
    fn row_starts(&self) -> (Vec<usize>, usize) {
        let mut starts = Vec::with_capacity(self.n);
        let mut at = 0;
        for r in 0..self.n {
            starts.push(at);
            at += self.row_kept(r).next_multiple_of(VALUE_BLOCK);
        }
        (starts, at)
    }

    /// Checks the mask against the shape and pattern and the value bytes
    /// against the mask, naming the first row or group that is wrong.
    pub fn validate(&self) -> Result<()> {
        let (n, k) = (self.n, self.k);
        if !self.format.values.holds_sparse_values() {
            return Err(shape_err(format!(
                "kept values cannot be {}",
                self.format.values.name()
            )));
        }
        if k == 0 || k % 32 != 0 {
            return Err(shape_err(format!(
                "rows of {k} columns: must be a non-zero multiple of 32"
            )));
        }
        if self.mask.len() != n * (k / 32) {
            return Err(shape_err(format!(
                "[{n}, {k}] needs {} mask words, got {}",
                n * (k / 32),
                self.mask.len()
            )));
        }
        if let Pattern::NM { n: keep, m } = self.format.pattern {
            let (keep, m) = (keep as usize, m as usize);
            for r in 0..n {
                for g in 0..k / m {
                    let c = g * m;
                    let word = self.mask[r * (k / 32) + c / 32];
                    let bits = ((word >> (c % 32)) & ((1u32 << m) - 1)).count_ones() as usize;
                    if bits != keep {
                        return Err(shape_err(format!(
                            "row {r}, columns {c}..{}: {bits} kept where the {keep}:{m} pattern keeps {keep}",
                            c + m
                        )));
                    }
                }
            }
        }
        let (_, total) = self.row_starts();
        let need = self.format.values.ggml_bytes(total);
        if self.values.len() != need {
            return Err(shape_err(format!(
                "the mask keeps {total} values (rows padded to {VALUE_BLOCK}): {need} bytes of {}, got {}",
                self.format.values.name(),
                self.values.len()
            )));
        }
        Ok(())
    }

    /// The dense [n, k] matrix with zeros where pruned (the CPU reference).
    pub fn to_dense(&self) -> Result<Vec<f32>> {
        self.validate()?;
        let (starts, total) = self.row_starts();
        let mut vals = vec![0f32; total];
        dequantize(self.format.values, &self.values, &mut vals)?;
        let (n, k) = (self.n, self.k);
        let mut out = vec![0f32; n * k];
        for r in 0..n {
            let mut i = starts[r];
            for c in 0..k {
                if self.mask[r * (k / 32) + c / 32] >> (c % 32) & 1 == 1 {
                    out[r * k + c] = vals[i];
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// Fraction of weights kept.
    pub fn density(&self) -> f64 {
        let kept: usize = (0..self.n).map(|r| self.row_kept(r)).sum();
        kept as f64 / (self.n * self.k).max(1) as f64
    }

    /// Bits per weight in the file: values (with their scales and row
    /// padding) plus the mask.
    pub fn bits_per_weight(&self) -> f64 {
        (self.values.len() + self.mask.len() * 4) as f64 * 8.0 / (self.n * self.k).max(1) as f64
    }

    /// Bytes row `r` adds to the GPU layout (its mask, group offsets and
    /// padded values); a part adds [`HEADER_WORDS`] + [`PAD_WORDS`] words.
    pub fn row_gpu_bytes(&self, r: usize) -> usize {
        let vals = self.row_kept(r).next_multiple_of(VALUE_BLOCK);
        (self.k / 32 + self.groups_per_row()) * 4 + self.format.values.gpu_bytes(vals)
    }

    /// Bytes of the whole weight in one GPU buffer.
    pub fn gpu_bytes(&self) -> usize {
        (HEADER_WORDS + PAD_WORDS) * 4 + (0..self.n).map(|r| self.row_gpu_bytes(r)).sum::<usize>()
    }

    fn groups_per_row(&self) -> usize {
        match self.format.pattern {
            Pattern::NM { .. } => 0,
            Pattern::Unstructured => self.k.div_ceil(GROUP_COLS),
        }
    }

    /// The GPU words of rows [row0, row0 + rows) (shaders/formats/sparse.wgsl).
    pub fn gpu_words(&self, row0: usize, rows: usize) -> Result<Vec<u32>> {
        self.validate()?;
        if row0 + rows > self.n {
            return Err(shape_err(format!(
                "rows {row0}..{} of a tensor with {}",
                row0 + rows,
                self.n
            )));
        }
        let (k, words) = (self.k, self.k / 32);
        let (starts, total) = self.row_starts();
        let v0 = starts.get(row0).copied().unwrap_or(total);
        let v1 = starts.get(row0 + rows).copied().unwrap_or(total);
        let vf = self.format.values;
        let words_of = vf
            .spec()
            .sparse_values
            .ok_or_else(|| shape_err(format!("kept values cannot be {}", vf.name())))?;
        let (vwords, swords) = words_of(&self.values[vf.ggml_bytes(v0)..vf.ggml_bytes(v1)]);
        let mask_off = HEADER_WORDS;
        let goff_off = mask_off + rows * words;
        let gpr = self.groups_per_row();
        let val_off = goff_off + rows * gpr;
        let (per_unit, row_stride) = match self.format.pattern {
            Pattern::NM { n, m } => {
                let per_row = k * n as usize / m as usize;
                (8 * n / m, per_row.next_multiple_of(VALUE_BLOCK))
            }
            Pattern::Unstructured => (0, 0),
        };
        let mut out = Vec::with_capacity(val_off + vwords.len() + swords.len() + PAD_WORDS);
        out.extend([
            mask_off as u32,
            goff_off as u32,
            val_off as u32,
            (val_off + vwords.len()) as u32,
            per_unit,
            row_stride as u32,
            0,
            0,
        ]);
        out.extend_from_slice(&self.mask[row0 * words..(row0 + rows) * words]);
        for r in row0..row0 + rows {
            let mut at = starts[r] - v0;
            let row = &self.mask[r * words..(r + 1) * words];
            for g in 0..gpr {
                out.push(at as u32);
                let end = ((g + 1) * GROUP_COLS / 32).min(words);
                at += row[g * GROUP_COLS / 32..end]
                    .iter()
                    .map(|m| m.count_ones() as usize)
                    .sum::<usize>();
            }
        }
        out.extend_from_slice(&vwords);
        out.extend_from_slice(&swords);
        // A unit's decoder loads a fixed window of words past its first value.
        out.extend([0; PAD_WORDS]);
        Ok(out)
    }

    /// Rows of several tensors of one format stacked (fused Q/K/V, gate/up).
    pub fn concat_rows(parts: &[&SparseTensor]) -> Result<SparseTensor> {
        let first = parts
            .first()
            .ok_or_else(|| shape_err("no tensors to stack".into()))?;
        if parts
            .iter()
            .any(|p| p.format != first.format || p.k != first.k)
        {
            return Err(shape_err(
                "stacked sparse tensors differ in format or row length".into(),
            ));
        }
        let mut t = SparseTensor {
            format: first.format,
            n: 0,
            k: first.k,
            mask: Vec::new(),
            values: Vec::new(),
        };
        for p in parts {
            t.n += p.n;
            t.mask.extend_from_slice(&p.mask);
            t.values.extend_from_slice(&p.values);
        }
        t.validate()?;
        Ok(t)
    }
}

/// The keep-mask of row-major [n, k] `scores` that keeps, per row, the
/// highest scores: `keep` of every `m` columns (N:M) or the top
/// `round(k * (1 - sparsity))` (unstructured). Ties keep the lower column.
pub fn top_mask(scores: &[f32], n: usize, k: usize, pattern: Pattern, sparsity: f64) -> Vec<bool> {
    let mut keep = vec![false; n * k];
    let mut pick = |row: usize, c0: usize, len: usize, count: usize| {
        let mut idx: Vec<usize> = (c0..c0 + len).collect();
        idx.sort_by(|&a, &b| {
            // A total order, so NaN scores (from a hostile file) cannot
            // make the sort panic: they rank above every number.
            scores[row * k + b]
                .total_cmp(&scores[row * k + a])
                .then(a.cmp(&b))
        });
        for &c in &idx[..count] {
            keep[row * k + c] = true;
        }
    };
    for r in 0..n {
        match pattern {
            Pattern::NM { n: nk, m } => {
                for g in 0..k / m as usize {
                    pick(r, g * m as usize, m as usize, nk as usize);
                }
            }
            Pattern::Unstructured => {
                let count = ((k as f64) * (1.0 - sparsity)).round().clamp(0.0, k as f64) as usize;
                pick(r, 0, k, count);
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Rng;

    fn random(
        rng: &mut Rng,
        pattern: Pattern,
        values: WeightFormat,
        n: usize,
        k: usize,
    ) -> (SparseTensor, Vec<f32>) {
        let w = rng.vec(n * k, 1.0);
        let mag: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        let keep = top_mask(&mag, n, k, pattern, 0.6);
        let f = SparseFormat::new(pattern, values).unwrap();
        (SparseTensor::from_dense(f, n, k, &w, &keep).unwrap(), w)
    }

    #[test]
    fn decode_keeps_the_largest_and_zeros_the_rest() {
        let mut rng = Rng::new(11);
        for pattern in [
            Pattern::NM { n: 2, m: 4 },
            Pattern::NM { n: 3, m: 8 },
            Pattern::Unstructured,
        ] {
            let (t, w) = random(&mut rng, pattern, WeightFormat::F16, 5, 96);
            let d = t.to_dense().unwrap();
            for r in 0..5 {
                let row = &w[r * 96..][..96];
                let kept: Vec<usize> = (0..96).filter(|&c| d[r * 96 + c] != 0.0).collect();
                // f16 keeps every kept value non-zero and within 1e-3.
                for &c in &kept {
                    assert!((d[r * 96 + c] - row[c]).abs() < 1e-3);
                }
                if pattern == Pattern::Unstructured {
                    assert_eq!(kept.len(), 38);
                    let least_kept = kept.iter().map(|&c| row[c].abs()).fold(f32::MAX, f32::min);
                    let most_dropped = (0..96)
                        .filter(|c| !kept.contains(c))
                        .map(|c| row[c].abs())
                        .fold(0f32, f32::max);
                    assert!(least_kept >= most_dropped);
                }
            }
        }
    }

    #[test]
    fn bits_per_weight_of_2_4_q4_0() {
        let mut rng = Rng::new(3);
        let (t, _) = random(
            &mut rng,
            Pattern::NM { n: 2, m: 4 },
            WeightFormat::Q4_0,
            4,
            128,
        );
        // 0.5 * 4.5 bits of values + 1 bit of mask.
        assert!((t.bits_per_weight() - 3.25).abs() < 1e-9);
        assert!((t.density() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn malformed_tensors_are_named_errors() {
        let mut rng = Rng::new(5);
        let (t, _) = random(
            &mut rng,
            Pattern::NM { n: 2, m: 4 },
            WeightFormat::Q8_0,
            3,
            64,
        );
        let mut bad = t.clone();
        bad.mask[1] |= 0xf0; // a group with four kept
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("row 0, columns 36..40"), "{e}");
        let mut bad = t.clone();
        bad.values.pop();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("bytes of q8_0"));
        let mut bad = t.clone();
        bad.mask.pop();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mask words"));
        assert!(bad.gpu_words(0, 3).is_err());
        assert!(t.gpu_words(2, 2).is_err());
        assert!(Pattern::parse("4:4").is_err());
        assert!(Pattern::parse("2:6").is_err());
        assert!(SparseFormat::new(Pattern::Unstructured, WeightFormat::Q6_K).is_err());
    }

    #[test]
    fn concat_then_split_is_the_same_rows() {
        let mut rng = Rng::new(9);
        let (a, _) = random(&mut rng, Pattern::Unstructured, WeightFormat::Q4_1, 3, 288);
        let (b, _) = random(&mut rng, Pattern::Unstructured, WeightFormat::Q4_1, 2, 288);
        let c = SparseTensor::concat_rows(&[&a, &b]).unwrap();
        let (da, db, dc) = (
            a.to_dense().unwrap(),
            b.to_dense().unwrap(),
            c.to_dense().unwrap(),
        );
        assert_eq!(&dc[..da.len()], &da[..]);
        assert_eq!(&dc[da.len()..], &db[..]);
        // The second part's words are those of `b` alone.
        assert_eq!(c.gpu_words(3, 2).unwrap(), b.gpu_words(0, 2).unwrap());
    }
}
