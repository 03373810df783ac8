//! Re-quantizing a GGUF model: every 2-D weight is decoded to f32 and
//! encoded in the target format; norms and other 1-D tensors stay as they
//! are; metadata and the tokenizer are copied.

use crate::arch::llama::{tensor_f32, weight_format};
use crate::load::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use crate::{Error, Result};
use lottery_engine::formats;
use lottery_engine::WeightFormat;
use std::collections::HashMap;

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

/// The GGUF tensor type of a format (declared in its module).
pub fn ggml_type(f: WeightFormat) -> GgmlType {
    GgmlType::from_u32(f.spec().ggml_type).expect("every format declares a ggml type")
}

/// Parses a format name as `lottery quantize --type` takes it.
pub fn parse_format(s: &str) -> Option<WeightFormat> {
    WeightFormat::parse(s)
}

/// The format a row of `row_len` weights gets when `want` does not divide
/// it: llama.cpp's fallbacks for 256-weight block formats, then f16.
pub fn fit_format(want: WeightFormat, row_len: usize) -> WeightFormat {
    want.fit(row_len)
}

/// Builds the re-quantized file (write it with `GgufWriter::write_file`).
pub fn quantize_gguf(
    src: &GgufFile,
    opts: &QuantizeOptions,
) -> Result<(GgufWriter, Vec<TensorReport>)> {
    quantize_with(src, opts, &HashMap::new(), &mut |_, _, _| Ok(None))
}

/// GPTQ re-quantization: every layer projection whose format GPTQ supports
/// is quantized with error feedback through its input's Gram matrix from
/// `stats` (`Session::calibrate_inputs` with `gram`); the rest as
/// [`quantize_gguf`] does. `progress(done, total)` per projection.
pub fn quantize_gguf_gptq(
    src: &GgufFile,
    opts: &QuantizeOptions,
    stats: &crate::prune::PruneStats,
    awq: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(GgufWriter, Vec<TensorReport>)> {
    let c = crate::arch::llama::LlamaConfig::from_gguf(src)?;
    // With `awq`, the activation-aware scales come first and GPTQ works on
    // the scaled model, whose inputs are x / s: H' = S^-1 H S^-1.
    let (replaced, scales) = if awq {
        let ms: ActStats = stats
            .iter()
            .map(|(k, v)| (k.clone(), v.mean_sq.clone()))
            .collect();
        let (r, _, s) = awq_transform(src, opts, &ms)?;
        (r, s)
    } else {
        (HashMap::new(), HashMap::new())
    };
    let total = c.n_layer * crate::prune::PROJECTIONS.len();
    let mut done = 0;
    let mut factors: HashMap<String, (Vec<f32>, Vec<f64>)> = HashMap::new();
    quantize_with(src, opts, &replaced, &mut |name, to, x| {
        let Some((l, input)) = crate::prune::projection_input(name) else {
            return Ok(None);
        };
        if to.grid().is_none() || l >= c.n_layer {
            return Ok(None);
        }
        let key = format!("blk.{l}.{input}");
        let gram = stats
            .get(&key)
            .and_then(|s| s.gram.as_ref())
            .ok_or_else(|| Error::Model(format!("GPTQ needs the Gram matrix of `{key}`")))?;
        let k = (gram.len() as f64).sqrt() as usize;
        let row = src.tensor(name).map(|t| t.row_len() as usize);
        if k == 0 || k * k != gram.len() || k % 32 != 0 || row != Some(k) || x.len() % k != 0 {
            return Err(Error::Model(format!(
                "the Gram matrix of `{key}` does not fit `{name}`"
            )));
        }
        if !factors.contains_key(&key) {
            // Q/K/V (and gate/up) are visited together: keep one factor.
            factors.clear();
            let g = match scales.get(&key) {
                Some(s) => (0..k * k)
                    .map(|ij| gram[ij] / (s[ij / k] * s[ij % k]))
                    .collect(),
                None => gram.clone(),
            };
            let u = crate::prune::inverse_hessian_factor(&g, k)?;
            factors.insert(key.clone(), (g, u));
        }
        let (g, u) = &factors[&key];
        let q = crate::gptq::gptq_rows(to, x, x.len() / k, k, g, u)?;
        done += 1;
        progress(done, total);
        Ok(Some(q))
    })
}

/// The format tensor `name` with rows of `row_len` gets.
fn format_for(opts: &QuantizeOptions, name: &str, row_len: usize) -> WeightFormat {
    let want = opts
        .overrides
        .iter()
        .find(|(pat, _)| name.contains(pat.as_str()))
        .map(|(_, f)| *f)
        .unwrap_or(opts.target);
    fit_format(want, row_len)
}

/// As [`quantize_gguf`], taking the f32 values of the tensors in `replaced`
/// from there instead of the source (activation-aware scaling), and the
/// bytes of a 2-D tensor from `encode(name, format, values)` when it gives
/// them (GPTQ).
#[allow(clippy::type_complexity)]
fn quantize_with(
    src: &GgufFile,
    opts: &QuantizeOptions,
    replaced: &HashMap<String, Vec<f32>>,
    encode: &mut dyn FnMut(&str, WeightFormat, &[f32]) -> Result<Option<Vec<u8>>>,
) -> Result<(GgufWriter, Vec<TensorReport>)> {
    if let Some(name) = crate::load::sparse::sparse_names(src).first() {
        return Err(Error::Model(format!(
            "`{name}` is stored sparse: re-quantizing a pruned file is not supported; \
             prune the dense source again with `lottery prune --values FORMAT`"
        )));
    }
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        if k == "general.file_type" || k == "general.alignment" {
            continue;
        }
        w.add_metadata(k.clone(), v.clone())?;
    }
    w.add_metadata(
        "general.file_type",
        MetaValue::U32(opts.target.spec().file_type),
    )?;
    w.add_metadata("general.quantized_by", MetaValue::String("lottery".into()))?;
    let mut report = Vec::new();
    for t in src.tensors() {
        let from = weight_format(&t.name, t.ggml_type)?;
        let err_in = |e: lottery_engine::Error| Error::Model(format!("tensor `{}`: {e}", t.name));
        if t.dims.len() < 2 {
            let (ty, data, to) = match replaced.get(&t.name) {
                Some(v) => (
                    GgmlType::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    "f32",
                ),
                None => (t.ggml_type, src.tensor_data(t)?.to_vec(), from.name()),
            };
            w.add_tensor(t.name.clone(), &t.dims, ty, data)?;
            report.push(TensorReport {
                name: t.name.clone(),
                from: from.name().into(),
                to: to.into(),
                rel_rms_error: 0.0,
            });
            continue;
        }
        let to = format_for(opts, &t.name, t.row_len() as usize);
        let x = match replaced.get(&t.name) {
            Some(v) => v.clone(),
            None => tensor_f32(src, t)?,
        };
        let q = match encode(&t.name, to, &x)? {
            Some(q) => q,
            None => formats::quantize(to, &x).map_err(err_in)?,
        };
        let mut y = vec![0f32; x.len()];
        formats::dequantize(to, &q, &mut y).map_err(err_in)?;
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

/// Mean squared input of each projection group per layer, from
/// `Session::calibrate`: `blk.L.attn_in`, `blk.L.o_in`, `blk.L.ffn_in`, `blk.L.down_in`.
pub type ActStats = HashMap<String, Vec<f32>>;

/// The exponents tried for the per-channel scales s_j = ms_j^(alpha / 2).
const ALPHAS: [f32; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// Activation-weighted error of quantizing `ws` (each [rows, k], columns
/// scaled by `s`), measured back in the unscaled space:
/// sum_ij ms_j * (deq(q(W_ij s_j)) / s_j - W_ij)^2.
fn scaled_error(ws: &[(&[f32], WeightFormat)], s: &[f32], ms: &[f32]) -> Result<f64> {
    let k = s.len();
    let mut err = 0f64;
    for (w, fmt) in ws {
        let scaled: Vec<f32> = w.iter().enumerate().map(|(i, v)| v * s[i % k]).collect();
        let q = formats::quantize(*fmt, &scaled)?;
        let mut back = vec![0f32; scaled.len()];
        formats::dequantize(*fmt, &q, &mut back)?;
        for (i, (b, v)) in back.iter().zip(w.iter()).enumerate() {
            let j = i % k;
            err += ms[j] as f64 * ((b / s[j] - v) as f64).powi(2);
        }
    }
    Ok(err)
}

/// Picks the per-input-channel scales for one group of matrices that share
/// an input, minimizing the activation-weighted error (alpha = 0, plain
/// quantization, is among the candidates, so this never does worse on it).
fn search_scales(ws: &[(&[f32], WeightFormat)], ms: &[f32]) -> Result<(f32, Vec<f32>)> {
    let mut best = (f64::INFINITY, 0.0, vec![1.0; ms.len()]);
    for alpha in ALPHAS {
        let mut s: Vec<f32> = ms
            .iter()
            .map(|m| (m.max(1e-12)).powf(alpha / 2.0))
            .collect();
        let (lo, hi) = s.iter().fold((f32::INFINITY, 0f32), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
        let norm = (lo * hi).sqrt().max(1e-12);
        s.iter_mut().for_each(|v| *v /= norm);
        let e = scaled_error(ws, &s, ms)?;
        if e < best.0 {
            best = (e, alpha, s);
        }
    }
    Ok((best.1, best.2))
}

fn scale_cols(w: &mut [f32], s: &[f32]) {
    let k = s.len();
    w.iter_mut().enumerate().for_each(|(i, v)| *v *= s[i % k]);
}

fn scale_rows_inv(w: &mut [f32], s: &[f32]) {
    let k = w.len() / s.len().max(1);
    w.iter_mut().enumerate().for_each(|(i, v)| *v /= s[i / k]);
}

/// Activation-aware re-quantization (AWQ-style): for each projection group,
/// input channels are scaled by s before quantizing and the inverse is folded
/// into the op that produces that input (the RMSNorm gain for Q/K/V and
/// gate/up, V's rows for the output projection, up's rows for down), so the
/// float model is unchanged and the rounding error lands where activations
/// are small. Returns the chosen alphas per layer alongside the report.
pub fn quantize_gguf_awq(
    src: &GgufFile,
    opts: &QuantizeOptions,
    stats: &ActStats,
) -> Result<(GgufWriter, Vec<TensorReport>, Vec<[f32; 4]>)> {
    let (replaced, alphas, _) = awq_transform(src, opts, stats)?;
    let (w, report) = quantize_with(src, opts, &replaced, &mut |_, _, _| Ok(None))?;
    Ok((w, report, alphas))
}

/// The scaled weights and folded norms of [`quantize_gguf_awq`], the chosen
/// alphas per layer, and each input's channel scales s (`blk.L.attn_in`,
/// ...): the scaled model's inputs are x_j / s_j.
#[allow(clippy::type_complexity)]
fn awq_transform(
    src: &GgufFile,
    opts: &QuantizeOptions,
    stats: &ActStats,
) -> Result<(
    HashMap<String, Vec<f32>>,
    Vec<[f32; 4]>,
    HashMap<String, Vec<f32>>,
)> {
    let c = crate::arch::llama::LlamaConfig::from_gguf(src)?;
    if c.fused_qkv || c.fused_gate_up {
        return Err(Error::Model(format!(
            "activation-aware quantization scales separate Q/K/V and gate/up tensors; this file fuses them ({})",
            c.family()
        )));
    }
    let mut replaced: HashMap<String, Vec<f32>> = HashMap::new();
    let mut scales: HashMap<String, Vec<f32>> = HashMap::new();
    let mut alphas = Vec::new();
    for l in 0..c.n_layer {
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        let get = |s: &str| -> Result<Vec<f32>> { tensor_f32(src, src.require_tensor(&name(s))?) };
        let stat = |s: &str, k: usize| -> Result<Vec<f32>> {
            let key = format!("blk.{l}.{s}");
            let v = stats
                .get(&key)
                .ok_or_else(|| Error::Model(format!("activation statistics lack `{key}`")))?;
            if v.len() != k {
                return Err(Error::Model(format!(
                    "activation statistics `{key}` have {} channels, expected {k}",
                    v.len()
                )));
            }
            Ok(v.clone())
        };
        let fmt = |s: &str, k: usize| format_for(opts, &name(s), k);
        let (d, ff, hd) = (c.d_model, c.ff, c.head_dim);
        let (mut q, mut k, mut v, mut o) = (
            get("attn_q")?,
            get("attn_k")?,
            get("attn_v")?,
            get("attn_output")?,
        );
        let (mut gate, mut up, mut down) = (get("ffn_gate")?, get("ffn_up")?, get("ffn_down")?);
        let (mut an, mut fnorm) = (get("attn_norm")?, get("ffn_norm")?);
        // 1. down (input: the SwiGLU output, folded into up's rows).
        let (a_down, s) = search_scales(&[(&down, fmt("ffn_down", ff))], &stat("down_in", ff)?)?;
        scale_cols(&mut down, &s);
        scale_rows_inv(&mut up, &s);
        scales.insert(format!("blk.{l}.down_in"), s);
        // 2. output projection (input: attention output, folded into V's rows;
        // heads sharing a KV head must share scales, so their statistics are averaged).
        let ms_o = stat("o_in", c.n_head * hd)?;
        let group = c.n_head / c.n_kv_head;
        let ms_o: Vec<f32> = (0..c.n_head * hd)
            .map(|ch| {
                let (h, dd) = (ch / hd, ch % hd);
                let first = h / group * group;
                (first..first + group)
                    .map(|hh| ms_o[hh * hd + dd])
                    .sum::<f32>()
                    / group as f32
            })
            .collect();
        let (a_o, s) = search_scales(&[(&o, fmt("attn_output", c.n_head * hd))], &ms_o)?;
        scale_cols(&mut o, &s);
        let s_v: Vec<f32> = (0..c.n_kv_head * hd)
            .map(|r| s[(r / hd) * group * hd + r % hd])
            .collect();
        scale_rows_inv(&mut v, &s_v);
        // V's rows now give v / s: a bias on them must shrink with them.
        if c.qkv_bias {
            let bn = format!("blk.{l}.attn_v.bias");
            let mut b = tensor_f32(src, src.require_tensor(&bn)?)?;
            b.iter_mut().zip(&s_v).for_each(|(b, s)| *b /= s);
            replaced.insert(bn, b);
        }
        scales.insert(format!("blk.{l}.o_in"), s);
        // 3. Q/K/V (input: attention RMSNorm, folded into its gain).
        let ms = stat("attn_in", d)?;
        let (a_qkv, s) = search_scales(
            &[
                (&q, fmt("attn_q", d)),
                (&k, fmt("attn_k", d)),
                (&v, fmt("attn_v", d)),
            ],
            &ms,
        )?;
        for w in [&mut q, &mut k, &mut v] {
            scale_cols(w, &s);
        }
        an.iter_mut().zip(&s).for_each(|(g, s)| *g /= s);
        scales.insert(format!("blk.{l}.attn_in"), s);
        // 4. gate/up (input: FFN RMSNorm, folded into its gain).
        let ms = stat("ffn_in", d)?;
        let (a_ffn, s) =
            search_scales(&[(&gate, fmt("ffn_gate", d)), (&up, fmt("ffn_up", d))], &ms)?;
        scale_cols(&mut gate, &s);
        scale_cols(&mut up, &s);
        fnorm.iter_mut().zip(&s).for_each(|(g, s)| *g /= s);
        scales.insert(format!("blk.{l}.ffn_in"), s);
        for (n, t) in [
            ("attn_q", q),
            ("attn_k", k),
            ("attn_v", v),
            ("attn_output", o),
            ("ffn_gate", gate),
            ("ffn_up", up),
            ("ffn_down", down),
            ("attn_norm", an),
            ("ffn_norm", fnorm),
        ] {
            replaced.insert(name(n), t);
        }
        alphas.push([a_qkv, a_o, a_ffn, a_down]);
    }
    Ok((replaced, alphas, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each format's declared GGUF type is one the reader knows, with the
    /// same block, so the engine's list and ggml's table cannot drift apart.
    #[test]
    fn every_format_has_its_ggml_type() {
        for f in WeightFormat::ALL {
            let t = GgmlType::from_u32(f.spec().ggml_type)
                .unwrap_or_else(|| panic!("{}: no ggml type {}", f.name(), f.spec().ggml_type));
            assert_eq!(ggml_type(f), t);
            assert_eq!(t.block_size() as usize, f.block_size(), "{}", f.name());
            assert_eq!(t.type_size() as usize, f.block_bytes(), "{}", f.name());
            assert_eq!(t.name().to_ascii_lowercase(), f.name());
            assert_eq!(weight_format("t", t).unwrap(), f);
        }
        assert_eq!(fit_format(WeightFormat::Q4_K, 576), WeightFormat::Q5_0);
        assert_eq!(fit_format(WeightFormat::Q6_K, 576), WeightFormat::Q8_0);
        assert_eq!(fit_format(WeightFormat::Q4_0, 40), WeightFormat::F16);
        assert_eq!(fit_format(WeightFormat::Q4_K, 512), WeightFormat::Q4_K);
    }
}
