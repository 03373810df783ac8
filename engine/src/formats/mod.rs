//! Weight formats: ggml block layouts, their CPU decode (the reference), the
//! CPU quantizers, and the repacking into the GPU layout the WGSL helpers in
//! `shaders/formats/` read.
//!
//! Each format is one module here (`<fmt>.rs`, beside its
//! `shaders/formats/<fmt>.wgsl`) that declares a [`FormatSpec`]: its ggml
//! block, GPU layout, decode and encode, GGUF type ids, fallback, error
//! budget and, where it has them, what GPTQ and sparse values need. The
//! [`formats!`] list below registers every module; nothing else in the
//! workspace matches on a format, so adding one touches that module, its
//! shader and the list.
//!
//! GPU layout: a weight [n, k] is one `u32` buffer. Dense formats are their
//! row-major values (f16 two per word). Block formats are repacked at load
//! time into the quant words of every block (row-major by block), followed by
//! the scale words of every block, copied bit for bit from ggml's block.
//! ggml's Q8_0 (34 bytes) and Q4_0 (18 bytes) blocks are not 4-byte aligned
//! and WGSL has no byte loads, so we repack once instead of shifting at
//! every read.

use crate::gpu::{Gpu, MatvecVariant, Tensor};
use crate::{Error, Result};

mod blocks;
mod kquant;
pub mod sparse;
pub use blocks::{offset_scale_searched, push_q5};
pub use iq4_nl_fmt::{iq4nl_index, iq4nl_scale, iq4nl_scale_weighted, IQ4NL_VALUES};
pub use kquant::k_scale_min;
pub use sparse::{Pattern, SparseFormat, SparseTensor};

/// Everything that makes a format, declared once in the format's module.
pub struct FormatSpec {
    /// Name in shader file names, messages and `lottery quantize --type`.
    pub name: &'static str,
    /// Weights per ggml block (1 for dense formats).
    pub block_size: usize,
    /// Bytes per ggml block.
    pub block_bytes: usize,
    /// How the ggml bytes become GPU words.
    pub gpu: GpuLayout,
    /// The GGUF tensor type id (ggml's `enum ggml_type`).
    pub ggml_type: u32,
    /// llama.cpp's `general.file_type` for a model mostly in this format.
    pub file_type: u32,
    /// The format a row this block does not divide gets instead (llama.cpp's
    /// choices for the 256-weight formats); f16 when `None` or when the
    /// fallback does not divide it either.
    pub fallback: Option<WeightFormat>,
    /// Relative RMS decode error on Gaussian data that a change to the
    /// quantizer must not exceed (tested below).
    pub budget: f64,
    /// ggml bytes of whole blocks into f32 (lengths checked by the caller).
    pub decode: fn(&[u8], &mut [f32]),
    /// Whole blocks of f32 into ggml bytes, as ggml's reference quantizer.
    pub encode: fn(&[f32], &mut Vec<u8>),
    /// Set for 32-weight formats with one f16 scale (and minimum) a block:
    /// rounding weight by weight, for GPTQ and the joint SparseGPT pass.
    pub grid: Option<Grid>,
    /// Set for formats a sparse weight can keep its values in: the GPU
    /// words of ggml blocks of kept values, as (codes, scales)
    /// (`shaders/formats/sparse_<fmt>.wgsl` reads them).
    pub sparse_values: Option<fn(&[u8]) -> (Vec<u32>, Vec<u32>)>,
}

/// The GPU layout of a format.
pub enum GpuLayout {
    /// Row-major words of the values as stored.
    Dense,
    /// Per block, `quant_words` words from byte `quant_at`; after every
    /// block's quants, per block one word for each `(byte, width)` in
    /// `scales` (width 2: an f16 in the low half).
    Blocks {
        quant_at: usize,
        quant_words: usize,
        scales: &'static [(usize, usize)],
    },
}

/// A 32-weight block format as a grid: one f16 scale d (and, if `affine`,
/// an f16 minimum m) per block and a code per weight.
pub struct Grid {
    pub affine: bool,
    /// ggml's reference scale for a block, and a second one to try when the
    /// grid is lopsided (the largest magnitude on the short side).
    pub base_scales: fn(&[f32]) -> (f32, Option<f32>),
    /// The code of `w` and its decoded value under (d, m).
    pub round: fn(d: f32, m: f32, w: f32) -> (u8, f32),
    /// Appends a block's ggml bytes from (d, m) and its 32 codes.
    pub pack: fn(d: f32, m: f32, q: &[u8; 32], out: &mut Vec<u8>),
}

/// The registry: one line per format (variant, module, file).
macro_rules! formats {
    ($($(#[$doc:meta])* $variant:ident => $module:ident = $file:literal,)*) => {
        $(#[path = $file] mod $module;)*

        /// A weight format the kernels can read.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum WeightFormat {
            $($(#[$doc])* $variant,)*
        }

        impl WeightFormat {
            pub const ALL: [WeightFormat; [$(stringify!($variant)),*].len()] =
                [$(Self::$variant),*];

            /// The format's declaration.
            pub fn spec(self) -> &'static FormatSpec {
                match self {
                    $(Self::$variant => &$module::SPEC,)*
                }
            }
        }
    };
}

formats! {
    F32 => f32_fmt = "f32.rs",
    F16 => f16_fmt = "f16.rs",
    BF16 => bf16_fmt = "bf16.rs",
    Q8_0 => q8_0_fmt = "q8_0.rs",
    Q4_0 => q4_0_fmt = "q4_0.rs",
    Q4_1 => q4_1_fmt = "q4_1.rs",
    Q5_0 => q5_0_fmt = "q5_0.rs",
    Q5_1 => q5_1_fmt = "q5_1.rs",
    IQ4_NL => iq4_nl_fmt = "iq4_nl.rs",
    Q4_K => q4_k_fmt = "q4_k.rs",
    Q5_K => q5_k_fmt = "q5_k.rs",
    Q6_K => q6_k_fmt = "q6_k.rs",
}

impl WeightFormat {
    /// Name used in shader file names and messages.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Parses a name as [`WeightFormat::name`] gives it (any case).
    pub fn parse(s: &str) -> Option<WeightFormat> {
        let s = s.to_ascii_lowercase();
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    /// The format of GGUF tensor type `id`, if the kernels read it.
    pub fn from_ggml_type(id: u32) -> Option<WeightFormat> {
        Self::ALL.into_iter().find(|f| f.spec().ggml_type == id)
    }

    /// Weights per ggml block (1 for dense formats).
    pub fn block_size(self) -> usize {
        self.spec().block_size
    }

    /// Bytes per ggml block.
    pub fn block_bytes(self) -> usize {
        self.spec().block_bytes
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
        match self.spec().gpu {
            GpuLayout::Dense => None,
            GpuLayout::Blocks {
                quant_words,
                scales,
                ..
            } => Some((quant_words, scales.len())),
        }
    }

    /// Bits per weight in the ggml file.
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_size() as f64
    }

    /// What a row of `row_len` weights is stored in when this format is
    /// asked for: itself when its block divides the row, else its fallback,
    /// else f16.
    pub fn fit(self, row_len: usize) -> WeightFormat {
        [Some(self), self.spec().fallback]
            .into_iter()
            .flatten()
            .find(|f| row_len % f.block_size() == 0)
            .unwrap_or(WeightFormat::F16)
    }

    /// The rounding grid, for GPTQ and joint pruning (see [`Grid`]).
    pub fn grid(self) -> Option<&'static Grid> {
        self.spec().grid.as_ref()
    }

    /// Whether sparse weights can keep their values in this format.
    pub fn holds_sparse_values(self) -> bool {
        self.spec().sparse_values.is_some()
    }
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
    (fmt.spec().decode)(&data[..need], out);
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
    (fmt.spec().encode)(x, &mut out);
    Ok(out)
}

/// Q4_0 or Q5_0 bytes (ggml's block layout) whose block scales come from
/// [`offset_scale_searched`], IQ4_NL bytes whose scale search weighs every
/// value alike ([`iq4nl_scale_weighted`]): what the KV cache stores for
/// these types. Other formats quantize as [`quantize`] does.
pub fn quantize_searched(fmt: WeightFormat, x: &[f32]) -> Result<Vec<u8>> {
    let (off, push): (f32, fn(&mut Vec<u8>, &[u8])) = match fmt {
        WeightFormat::Q4_0 => (8.0, blocks::push_nibbles),
        WeightFormat::Q5_0 => (16.0, blocks::push_q5),
        WeightFormat::IQ4_NL if x.len() % 32 == 0 => {
            let mut out = Vec::with_capacity(fmt.ggml_bytes(x.len()));
            iq4_nl_fmt::encode_weighted(x, &mut out, true);
            return Ok(out);
        }
        _ => return quantize(fmt, x),
    };
    if x.len() % 32 != 0 {
        return quantize(fmt, x);
    }
    let mut out = Vec::with_capacity(fmt.ggml_bytes(x.len()));
    blocks::encode_offset_with(x, &mut out, off, push, offset_scale_searched);
    Ok(out)
}

/// Rows a tile of a [`WeightLayout::Tiled`] weight holds: the rows of one
/// workgroup of the `Rows` decode projection, half of the prefill one
/// (`FMT_TILE` in `shaders/common/blk.wgsl`).
pub const TILE_ROWS: usize = 32;

/// How a block format's blocks are ordered in GPU memory (the kernels read
/// either through `fmt_blk`, `shaders/common/blk.wgsl`). Dense formats are
/// always row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// Row after row: a GPU's workgroup or subgroup walks one row.
    Rows,
    /// Tiles of [`TILE_ROWS`] rows (the last one padded), each storing
    /// block 0 of its rows side by side, then block 1, ...; the scales the
    /// same way. The CPU adapters' `Rows` kernels give each workgroup one
    /// tile (prefill two), so it streams one contiguous run of memory
    /// instead of one per row: 1.45x faster on a weight that does not fit
    /// the CPU's caches (lavapipe, BENCHMARKS.md 2026-12-07).
    Tiled,
}

impl WeightLayout {
    /// The layout `gpu`'s projection kernels read fastest for `fmt`. The
    /// one place the choice is made; every kernel reads both.
    pub fn for_adapter(gpu: &Gpu, fmt: WeightFormat) -> WeightLayout {
        if fmt.block_words().is_some()
            && gpu.matvec_variant() == MatvecVariant::Rows
            && !gpu.rows_layout_forced
        {
            WeightLayout::Tiled
        } else {
            WeightLayout::Rows
        }
    }
}

/// Where block `b` of `row` (of `nb` blocks a row) goes under `layout`:
/// `fmt_blk` in `shaders/common/blk.wgsl`.
pub fn block_slot(layout: WeightLayout, row: usize, b: usize, nb: usize) -> usize {
    match layout {
        WeightLayout::Rows => row * nb + b,
        WeightLayout::Tiled => ((row / TILE_ROWS) * nb + b) * TILE_ROWS + row % TILE_ROWS,
    }
}

/// ggml bytes of a [n, k] weight repacked into GPU words, and the word
/// offset of the scale region (0 for dense formats).
pub fn repack(fmt: WeightFormat, data: &[u8], n: usize, k: usize) -> Result<(Vec<u32>, u32)> {
    repack_as(fmt, data, n, k, WeightLayout::Rows)
}

/// [`repack`] in `layout` (dense formats ignore it). A tiled weight has its
/// rows padded to a whole tile with zero blocks no kernel reads.
pub fn repack_as(
    fmt: WeightFormat,
    data: &[u8],
    n: usize,
    k: usize,
    layout: WeightLayout,
) -> Result<(Vec<u32>, u32)> {
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
    let GpuLayout::Blocks {
        quant_at,
        quant_words,
        scales,
    } = fmt.spec().gpu
    else {
        return Ok((
            data.chunks_exact(4).map(|c| blocks::word(c, 0)).collect(),
            0,
        ));
    };
    let per_row = k / fmt.block_size();
    let rows = match layout {
        WeightLayout::Rows => n,
        WeightLayout::Tiled => n.next_multiple_of(TILE_ROWS),
    };
    let nb = rows * per_row;
    let soff = nb * quant_words;
    let mut words = vec![0u32; nb * (quant_words + scales.len())];
    for (i, b) in data.chunks_exact(fmt.block_bytes()).enumerate() {
        let at = block_slot(layout, i / per_row, i % per_row, per_row);
        for j in 0..quant_words {
            words[at * quant_words + j] = blocks::word(b, quant_at + 4 * j);
        }
        for (j, &(off, width)) in scales.iter().enumerate() {
            words[soff + at * scales.len() + j] = match width {
                2 => blocks::half_word(b, off),
                _ => blocks::word(b, off),
            };
        }
    }
    Ok((words, soff as u32))
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
    /// How the blocks are ordered (the `TILED` define).
    pub layout: WeightLayout,
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
    /// Uploads ggml-layout `data` for a [n, k] weight named `name`, in the
    /// layout the adapter's kernels read fastest ([`WeightLayout::for_adapter`]).
    pub fn upload(
        gpu: &Gpu,
        name: &str,
        fmt: WeightFormat,
        data: &[u8],
        n: usize,
        k: usize,
    ) -> Result<GpuWeight> {
        Self::upload_as(
            gpu,
            name,
            fmt,
            data,
            n,
            k,
            WeightLayout::for_adapter(gpu, fmt),
        )
    }

    /// [`GpuWeight::upload`] in a given layout (the conformance suite runs
    /// every kernel on both).
    pub fn upload_as(
        gpu: &Gpu,
        name: &str,
        fmt: WeightFormat,
        data: &[u8],
        n: usize,
        k: usize,
        layout: WeightLayout,
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
        let layout = match fmt.block_words() {
            Some(_) => layout,
            None => WeightLayout::Rows,
        };
        let row_gpu = fmt.gpu_bytes(k) as u64;
        let mut max_rows = (gpu.max_binding() / row_gpu) as usize;
        if layout == WeightLayout::Tiled {
            // Parts split at whole tiles, so a padded part still fits.
            max_rows -= max_rows % TILE_ROWS;
            if max_rows == 0 {
                return Self::upload_as(gpu, name, fmt, data, n, k, WeightLayout::Rows);
            }
        }
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
            let (words, soff) =
                repack_as(fmt, bytes, rows, k, layout).map_err(|e| werr(e.to_string()))?;
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
            layout,
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
            layout: WeightLayout::Rows,
            parts,
        })
    }

    /// The defines that pick this weight's decoder in a kernel.
    pub fn shader_defines(&self) -> Vec<(&'static str, String)> {
        let mut d = format_defines(self.format, self.sparse);
        if self.layout == WeightLayout::Tiled {
            d.push(("TILED", "1".to_string()));
        }
        d
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

    /// Every format meets the error budget its module declares, as the RMS
    /// of the decode error relative to the RMS of the weights, on Gaussian
    /// data. These are the numbers a change to a quantizer must not make worse.
    #[test]
    fn error_budget_per_format() {
        let mut rng = Rng::new(7);
        let x: Vec<f32> = (0..256 * 13).map(|_| rng.normal()).collect();
        for fmt in WeightFormat::ALL {
            let budget = fmt.spec().budget;
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

    /// The registry is consistent: names and GGUF ids are unique, a
    /// declared GPU layout lies inside the ggml block, and a grid's
    /// packed block decodes to the values its rounding promised.
    #[test]
    fn declarations_are_consistent() {
        let mut rng = Rng::new(3);
        for (i, a) in WeightFormat::ALL.iter().enumerate() {
            for b in &WeightFormat::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.spec().ggml_type, b.spec().ggml_type);
            }
            assert_eq!(WeightFormat::parse(a.name()), Some(*a));
            assert_eq!(WeightFormat::from_ggml_type(a.spec().ggml_type), Some(*a));
            if let GpuLayout::Blocks {
                quant_at,
                quant_words,
                scales,
            } = a.spec().gpu
            {
                assert!(
                    quant_at + 4 * quant_words <= a.block_bytes(),
                    "{}",
                    a.name()
                );
                for &(at, width) in scales {
                    assert!(width == 2 || width == 4);
                    assert!(at + width <= a.block_bytes(), "{}", a.name());
                }
            }
            if let Some(g) = a.grid() {
                assert_eq!(a.block_size(), 32, "{}", a.name());
                let x: Vec<f32> = (0..32).map(|_| rng.normal()).collect();
                let (d, _) = (g.base_scales)(&x);
                let m = if g.affine { -1.5 } else { 0.0 };
                let (d, m) = (
                    half::f16::from_f32(d).to_f32(),
                    half::f16::from_f32(m).to_f32(),
                );
                let mut q = [0u8; 32];
                let mut want = [0f32; 32];
                for i in 0..32 {
                    (q[i], want[i]) = (g.round)(d, m, x[i]);
                }
                let mut bytes = Vec::new();
                (g.pack)(d, m, &q, &mut bytes);
                assert_eq!(bytes.len(), a.block_bytes(), "{}", a.name());
                let mut got = [0f32; 32];
                dequantize(*a, &bytes, &mut got).unwrap();
                assert_eq!(got, want, "{}", a.name());
            }
        }
    }

    /// A tiled weight holds the same blocks as a row-major one, each at the
    /// slot `fmt_blk` computes, and its scales likewise; padding is zero.
    #[test]
    fn tiled_repack_moves_whole_blocks() {
        let mut rng = Rng::new(11);
        for fmt in [WeightFormat::Q4_1, WeightFormat::Q8_0, WeightFormat::Q6_K] {
            let (q, s) = fmt.block_words().unwrap();
            let k = fmt.block_size() * 3;
            for n in [1, 31, 32, 33, 130] {
                let data = quantize(fmt, &rng.vec(n * k, 1.0)).unwrap();
                let (rows, soff) = repack(fmt, &data, n, k).unwrap();
                let (tiled, toff) = repack_as(fmt, &data, n, k, WeightLayout::Tiled).unwrap();
                let nb = k / fmt.block_size();
                let padded = n.next_multiple_of(TILE_ROWS) * nb;
                assert_eq!(toff as usize, padded * q);
                assert_eq!(tiled.len(), padded * (q + s));
                let mut used = vec![false; padded];
                for r in 0..n {
                    for b in 0..nb {
                        let (i, at) = (r * nb + b, block_slot(WeightLayout::Tiled, r, b, nb));
                        assert!(!used[at], "{} slot {at} twice", fmt.name());
                        used[at] = true;
                        assert_eq!(tiled[at * q..][..q], rows[i * q..][..q]);
                        assert_eq!(
                            tiled[toff as usize + at * s..][..s],
                            rows[soff as usize + i * s..][..s]
                        );
                    }
                }
                for (at, u) in used.iter().enumerate() {
                    if !u {
                        assert!(tiled[at * q..][..q].iter().all(|&w| w == 0));
                    }
                }
            }
        }
    }

    #[test]
    fn repack_rejects_bad_shapes() {
        assert!(repack(WeightFormat::Q4_1, &[0u8; 20], 1, 16).is_err());
        assert!(repack(WeightFormat::Q4_1, &[0u8; 19], 1, 32).is_err());
        assert!(repack(WeightFormat::F32, &[0u8; 4 * 12], 1, 12).is_err());
    }
}
