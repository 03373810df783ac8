//! GPTQ (arXiv 2210.17323) for the 32-weight block formats: each row is
//! quantized column by column, and every column's rounding error is spread
//! over the row's later columns through the upper Cholesky factor U of
//! H^-1 (H = X^T X of the projection's calibration inputs, the same factor
//! SparseGPT uses), so later weights absorb what earlier ones lost.
//!
//! A block's scale is chosen when the walk reaches it, from its weights as
//! updated so far: the ggml reference scale and nearby ones are tried and
//! the one with the least importance-weighted rounding error
//! (sum_i H_ii (w_i - Q(w_i))^2, llama.cpp's imatrix criterion) is kept.

use crate::prune::inverse_hessian_factor;
use crate::{Error, Result};
use half::f16;
use lottery_engine::formats::Grid;
use lottery_engine::WeightFormat;

/// Formats GPTQ can write: those whose module declares a rounding grid.
pub fn gptq_formats() -> Vec<WeightFormat> {
    WeightFormat::ALL
        .into_iter()
        .filter(|f| f.grid().is_some())
        .collect()
}

/// Scale factors tried around the reference scale of each block.
const SCALE_STEPS: [f32; 13] = [
    0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06, 1.08, 1.1, 1.12,
];

/// Block parameters: the f16 scale and (affine formats) the f16 minimum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub d: f32,
    pub m: f32,
}

/// The code of `w` and its decoded value under `p`.
pub(crate) fn round(g: &Grid, p: Params, w: f32) -> (u8, f32) {
    (g.round)(p.d, p.m, w)
}

fn h16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// The candidate parameters of a block: ggml's reference choice (and the
/// grid's second base, if it has one), scaled by each of [`SCALE_STEPS`].
fn candidates(g: &Grid, b: &[f32]) -> Vec<Params> {
    let lo = b.iter().fold(f32::INFINITY, |a, v| a.min(*v));
    let m = if g.affine { h16(lo) } else { 0.0 };
    let (base, second) = (g.base_scales)(b);
    [Some(base), second]
        .into_iter()
        .flatten()
        .flat_map(|b| SCALE_STEPS.iter().map(move |s| Params { d: h16(b * s), m }))
        .collect()
}

/// The candidate with the least `imp`-weighted rounding error on `b`.
pub(crate) fn choose(g: &Grid, b: &[f32], imp: &[f32]) -> Params {
    let mut best = (f64::INFINITY, Params { d: 0.0, m: 0.0 });
    for p in candidates(g, b) {
        let e: f64 = b
            .iter()
            .zip(imp)
            .map(|(w, h)| {
                let (_, v) = round(g, p, *w);
                *h as f64 * ((w - v) as f64).powi(2)
            })
            .sum();
        if e < best.0 {
            best = (e, p);
        }
    }
    best.1
}

/// The ggml bytes of one block from its parameters and 32 codes.
pub(crate) fn encode(g: &Grid, p: Params, q: &[u8; 32], out: &mut Vec<u8>) {
    (g.pack)(p.d, p.m, q, out)
}

/// GPTQ of a row-major [n, k] weight into ggml bytes of `fmt`, with the
/// inputs' Gram matrix `gram` ([k, k]).
pub fn gptq_quantize(
    fmt: WeightFormat,
    w: &[f32],
    n: usize,
    k: usize,
    gram: &[f32],
) -> Result<Vec<u8>> {
    if fmt.grid().is_none() || k % 32 != 0 || w.len() != n * k || gram.len() != k * k {
        return Err(Error::Model(format!(
            "GPTQ: {} [{n}, {k}] with a Gram matrix of {} values: needs one of {} and rows a multiple of 32",
            fmt.name(),
            gram.len(),
            gptq_formats()
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let u = inverse_hessian_factor(gram, k)?;
    gptq_rows(fmt, w, n, k, gram, &u)
}

/// As [`gptq_quantize`] with the factor U of H^-1 already computed (inputs
/// shared by several weights: Q/K/V, gate/up).
pub fn gptq_rows(
    fmt: WeightFormat,
    w: &[f32],
    n: usize,
    k: usize,
    gram: &[f32],
    u: &[f64],
) -> Result<Vec<u8>> {
    let g = fmt
        .grid()
        .ok_or_else(|| Error::Model(format!("GPTQ cannot write {}", fmt.name())))?;
    let imp: Vec<f32> = (0..k).map(|i| gram[i * k + i].max(0.0) + 1e-12).collect();
    let mut out = Vec::with_capacity(fmt.ggml_bytes(n * k));
    let mut row = vec![0f64; k];
    let mut cur = [0f32; 32];
    let mut q = [0u8; 32];
    for r in 0..n {
        row.iter_mut()
            .zip(&w[r * k..(r + 1) * k])
            .for_each(|(a, b)| *a = *b as f64);
        for b0 in (0..k).step_by(32) {
            for (c, v) in cur.iter_mut().zip(&row[b0..b0 + 32]) {
                *c = *v as f32;
            }
            let p = choose(g, &cur, &imp[b0..b0 + 32]);
            for i in b0..b0 + 32 {
                let (code, v) = round(g, p, row[i] as f32);
                q[i - b0] = code;
                let e = (row[i] - v as f64) / u[i * k + i];
                let ui = &u[i * k..(i + 1) * k];
                for j in i + 1..k {
                    row[j] -= e * ui[j];
                }
                row[i] = v as f64;
            }
            encode(g, p, &q, &mut out);
        }
    }
    debug_assert_eq!(out.len(), fmt.ggml_bytes(n * k));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lottery_engine::formats;
    use lottery_engine::reference::Rng;

    #[test]
    fn blocks_decode_to_the_rounded_values() {
        let mut rng = Rng::new(4);
        let b = rng.vec(32, 1.0);
        for fmt in gptq_formats() {
            let g = fmt.grid().unwrap();
            for p in candidates(g, &b) {
                let mut q = [0u8; 32];
                let mut want = [0f32; 32];
                for i in 0..32 {
                    (q[i], want[i]) = round(g, p, b[i]);
                }
                let mut bytes = Vec::new();
                encode(g, p, &q, &mut bytes);
                let mut got = [0f32; 32];
                formats::dequantize(fmt, &bytes, &mut got).unwrap();
                for i in 0..32 {
                    assert!(
                        (got[i] - want[i]).abs() <= 1e-6 * (1.0 + want[i].abs()),
                        "{}: {i}",
                        fmt.name()
                    );
                }
            }
        }
    }

    /// On correlated inputs, GPTQ's output error is below plain rounding's.
    #[test]
    fn gptq_beats_round_to_nearest_on_the_output() {
        let (n, k, t) = (8, 96, 300);
        let mut rng = Rng::new(21);
        let base = rng.vec(t * 3, 1.0);
        let noise = rng.vec(t * k, 1.0);
        let x: Vec<f32> = (0..t * k)
            .map(|i| (1.0 + (i % k % 5) as f32) * (base[i / k * 3 + i % 3] + 0.2 * noise[i]))
            .collect();
        let g = crate::prune::tests::mean_gram(&x, k);
        let w = rng.vec(n * k, 1.0);
        let err = |q: &[f32]| crate::prune::tests::recon_error(&x, &w, q, n, k).powi(2);
        for fmt in [WeightFormat::Q4_0, WeightFormat::IQ4_NL, WeightFormat::Q5_0] {
            let mut rtn = vec![0f32; n * k];
            formats::dequantize(fmt, &formats::quantize(fmt, &w).unwrap(), &mut rtn).unwrap();
            let mut gq = vec![0f32; n * k];
            formats::dequantize(fmt, &gptq_quantize(fmt, &w, n, k, &g).unwrap(), &mut gq).unwrap();
            let (a, b) = (err(&rtn), err(&gq));
            eprintln!("{}: rtn {a:.1} gptq {b:.1}", fmt.name());
            assert!(b < 0.8 * a, "{}: gptq {b} vs rtn {a}", fmt.name());
        }
    }
}
