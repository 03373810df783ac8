//! Re-quantizing a GGUF model: every 2-D weight is decoded to f32 and
//! encoded in the target format; norms and other 1-D tensors stay as they
//! are; metadata and the tokenizer are copied.

use crate::arch::llama::{tensor_f32, weight_format};
use crate::load::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use crate::{Error, Result};
use lottery_engine::formats;
use lottery_engine::WeightFormat;

/// What to produce.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub target: WeightFormat,
    /// (substring of a tensor name, format): the first match wins over `target`.
    pub overrides: Vec<(String, WeightFormat)>,
}

/// What happened to one tensor.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub from: String,
    pub to: String,
    /// Relative RMS error of the new weights against the source's decode.
    pub rel_rms_error: f64,
}

pub fn ggml_type(f: WeightFormat) -> GgmlType {
    match f {
        WeightFormat::F32 => GgmlType::F32,
        WeightFormat::F16 => GgmlType::F16,
        WeightFormat::BF16 => GgmlType::BF16,
        WeightFormat::Q8_0 => GgmlType::Q8_0,
        WeightFormat::Q4_0 => GgmlType::Q4_0,
        WeightFormat::Q4_1 => GgmlType::Q4_1,
        WeightFormat::Q5_0 => GgmlType::Q5_0,
        WeightFormat::Q5_1 => GgmlType::Q5_1,
        WeightFormat::IQ4_NL => GgmlType::IQ4_NL,
        WeightFormat::Q4_K => GgmlType::Q4_K,
        WeightFormat::Q5_K => GgmlType::Q5_K,
        WeightFormat::Q6_K => GgmlType::Q6_K,
    }
}

/// Parses a format name as `lottery quantize --type` takes it.
pub fn parse_format(s: &str) -> Option<WeightFormat> {
    WeightFormat::ALL
        .into_iter()
        .find(|f| f.name() == s.to_ascii_lowercase())
}

/// The format a row of `row_len` weights gets when `want` does not divide
/// it: llama.cpp's fallbacks for 256-weight block formats, then f16.
pub fn fit_format(want: WeightFormat, row_len: usize) -> WeightFormat {
    if row_len % want.block_size() == 0 {
        return want;
    }
    let fallback = match want {
        WeightFormat::Q4_K => WeightFormat::Q5_0,
        WeightFormat::Q5_K => WeightFormat::Q5_1,
        WeightFormat::Q6_K => WeightFormat::Q8_0,
        _ => WeightFormat::F16,
    };
    if row_len % fallback.block_size() == 0 {
        fallback
    } else {
        WeightFormat::F16
    }
}

/// llama.cpp's `general.file_type` for a model that is mostly `f`.
fn file_type(f: WeightFormat) -> u32 {
    match f {
        WeightFormat::F32 => 0,
        WeightFormat::F16 => 1,
        WeightFormat::Q4_0 => 2,
        WeightFormat::Q4_1 => 3,
        WeightFormat::Q8_0 => 7,
        WeightFormat::Q5_0 => 8,
        WeightFormat::Q5_1 => 9,
        WeightFormat::Q4_K => 14,
        WeightFormat::Q5_K => 16,
        WeightFormat::Q6_K => 18,
        WeightFormat::IQ4_NL => 25,
        WeightFormat::BF16 => 32,
    }
}

/// Builds the re-quantized file (write it with `GgufWriter::write_file`).
pub fn quantize_gguf(
    src: &GgufFile,
    opts: &QuantizeOptions,
) -> Result<(GgufWriter, Vec<TensorReport>)> {
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        if k == "general.file_type" || k == "general.alignment" {
            continue;
        }
        w.add_metadata(k.clone(), v.clone())?;
    }
    w.add_metadata("general.file_type", MetaValue::U32(file_type(opts.target)))?;
    w.add_metadata("general.quantized_by", MetaValue::String("lottery".into()))?;
    let mut report = Vec::new();
    for t in src.tensors() {
        let from = weight_format(&t.name, t.ggml_type)?;
        if t.dims.len() < 2 {
            w.add_tensor(
                t.name.clone(),
                &t.dims,
                t.ggml_type,
                src.tensor_data(t)?.to_vec(),
            )?;
            report.push(TensorReport {
                name: t.name.clone(),
                from: from.name().into(),
                to: from.name().into(),
                rel_rms_error: 0.0,
            });
            continue;
        }
        let want = opts
            .overrides
            .iter()
            .find(|(pat, _)| t.name.contains(pat.as_str()))
            .map(|(_, f)| *f)
            .unwrap_or(opts.target);
        let to = fit_format(want, t.row_len() as usize);
        let x = tensor_f32(src, t)?;
        let q = formats::quantize(to, &x)
            .map_err(|e| Error::Model(format!("tensor `{}`: {e}", t.name)))?;
        let mut y = vec![0f32; x.len()];
        formats::dequantize(to, &q, &mut y)
            .map_err(|e| Error::Model(format!("tensor `{}`: {e}", t.name)))?;
        let err: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let sig: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
        w.add_tensor(t.name.clone(), &t.dims, ggml_type(to), q)?;
        report.push(TensorReport {
            name: t.name.clone(),
            from: from.name().into(),
            to: to.name().into(),
            rel_rms_error: if sig > 0.0 { (err / sig).sqrt() } else { 0.0 },
        });
    }
    Ok((w, report))
}
