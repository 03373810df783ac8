//! The kernel conformance suite: every kernel x weight format x variant
//! against its CPU reference on seeded random inputs with odd shapes. The
//! engine's tests and `lottery doctor` run this same code, so a vendor's
//! report and our CI check exactly the same thing.

use crate::formats::{self, GpuWeight, Pattern, SparseFormat, SparseTensor, WeightLayout};
use crate::gpu::{Dispatch, Gpu, MatvecVariant, Step, StepBuffer};
use crate::kv::{self, KvCache, KvDtype, KvPolicy, KvTypes};
use crate::ops::{self, AttnShape, MatvecOpts, SampleUniform};
use crate::reference::{self as cpu, Rng, SampleParams};
use crate::{Result, WeightFormat};
use std::future::Future;
use web_time::Instant;

/// One checked case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub kernel: String,
    pub format: String,
    pub variant: String,
    pub tier: String,
    pub max_abs: f32,
    pub max_rel: f32,
    pub passed: bool,
    /// Wall time of the case (upload, run, readback), milliseconds.
    pub ms: f64,
    /// The first failure (index, expected, actual), or the error.
    pub detail: String,
}

struct Check {
    max_abs: f32,
    max_rel: f32,
    fail: Option<String>,
}

fn compare(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Check {
    let mut c = Check {
        max_abs: 0.0,
        max_rel: 0.0,
        fail: None,
    };
    if got.len() < want.len() {
        c.fail = Some(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
        return c;
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        c.max_abs = c.max_abs.max(err);
        c.max_rel = c.max_rel.max(err / w.abs().max(1e-6));
        if (err > atol + rtol * w.abs() || !g.is_finite()) && c.fail.is_none() {
            c.fail = Some(format!(
                "{what}: index {i}: expected {w}, got {g} (|err| {err:.3e} > {:.3e})",
                atol + rtol * w.abs()
            ));
        }
    }
    c
}

/// A step of `n_tokens` starting at `pos0`, attention in one chunk.
pub fn step(n_tokens: u32, pos0: u32) -> Step {
    let mut st = Step {
        n_tokens,
        pos0,
        kv_len: pos0 + n_tokens,
        chunk_len: pos0 + n_tokens,
        n_chunks: 1,
        ..Default::default()
    };
    // Callers without a cache ignore these; attention ones get a full cache
    // of at least this many slots.
    KvPolicy::Full
        .plan(pos0, n_tokens, pos0 + n_tokens, false)
        .apply(&mut st);
    st
}

/// Random weights in `fmt` and their exact dequantized values.
pub fn random_weight(
    gpu: &Gpu,
    rng: &mut Rng,
    fmt: WeightFormat,
    n: usize,
    k: usize,
) -> Result<(GpuWeight, Vec<f32>)> {
    random_weight_as(gpu, rng, fmt, n, k, WeightLayout::for_adapter(gpu, fmt))
}

/// [`random_weight`] in a given block layout.
pub fn random_weight_as(
    gpu: &Gpu,
    rng: &mut Rng,
    fmt: WeightFormat,
    n: usize,
    k: usize,
    layout: WeightLayout,
) -> Result<(GpuWeight, Vec<f32>)> {
    let x = rng.vec(n * k, 0.5);
    let q = formats::quantize(fmt, &x)?;
    let mut deq = vec![0f32; n * k];
    formats::dequantize(fmt, &q, &mut deq)?;
    Ok((
        GpuWeight::upload_as(gpu, &format!("w.{}", fmt.name()), fmt, &q, n, k, layout)?,
        deq,
    ))
}

/// What the projection and lookup kernels are checked on: every dense
/// format, and sparse patterns over every value format.
#[derive(Clone, Copy, Debug)]
pub enum WeightKind {
    Dense(WeightFormat),
    Sparse(SparseFormat),
}

impl WeightKind {
    pub fn all() -> Vec<WeightKind> {
        let mut v: Vec<WeightKind> = WeightFormat::ALL.map(WeightKind::Dense).to_vec();
        for values in formats::sparse::value_formats() {
            for pattern in [Pattern::NM { n: 2, m: 4 }, Pattern::Unstructured] {
                v.push(WeightKind::Sparse(SparseFormat { pattern, values }));
            }
        }
        // Other N:M shapes run the same shader with other header words.
        for (n, m, values) in [(4, 8, WeightFormat::Q8_0), (3, 8, WeightFormat::Q4_1)] {
            v.push(WeightKind::Sparse(SparseFormat {
                pattern: Pattern::NM { n, m },
                values,
            }));
        }
        v
    }

    pub fn name(self) -> String {
        match self {
            WeightKind::Dense(f) => f.name().into(),
            WeightKind::Sparse(s) => s.name(),
        }
    }

    /// A row length with an odd number of blocks; sparse rows span more than
    /// one group of stored offsets.
    pub fn odd_k(self) -> usize {
        match self {
            WeightKind::Dense(f) => odd_k(f),
            WeightKind::Sparse(_) => 32 * 9,
        }
    }

    /// A row length for the projection cases of `n` rows: for the dense
    /// float formats both one that is a multiple of 32 (the CPU kernels'
    /// group path, `Gpu::projection_groups`) and one that is not.
    fn proj_k(self, n: usize) -> usize {
        match self {
            WeightKind::Dense(f) if f.block_size() == 1 && n == 37 => 32 * 3,
            _ => self.odd_k(),
        }
    }

    /// " tiled" when the adapter's kernels get this kind in the tiled block
    /// layout (case names say which layout ran).
    fn layout_suffix(self, gpu: &Gpu) -> &'static str {
        match self {
            WeightKind::Dense(f) if WeightLayout::for_adapter(gpu, f) == WeightLayout::Tiled => {
                " tiled"
            }
            _ => "",
        }
    }

    /// A row length for the lookup kernel.
    fn embed_d(self) -> usize {
        match self {
            WeightKind::Dense(f) => match f.block_size() {
                1 => 88,
                32 => 96,
                b => b,
            },
            WeightKind::Sparse(_) => 288,
        }
    }
}

/// Random weights of `kind` and their exact decoded values. Sparse ones keep
/// the largest magnitudes, 60% pruned where the pattern leaves a choice.
pub fn random_kind_weight(
    gpu: &Gpu,
    rng: &mut Rng,
    kind: WeightKind,
    n: usize,
    k: usize,
) -> Result<(GpuWeight, Vec<f32>)> {
    match kind {
        WeightKind::Dense(f) => random_weight(gpu, rng, f, n, k),
        WeightKind::Sparse(sf) => {
            let x = rng.vec(n * k, 0.5);
            let mag: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let keep = formats::sparse::top_mask(&mag, n, k, sf.pattern, 0.6);
            let t = SparseTensor::from_dense(sf, n, k, &x, &keep)?;
            let deq = t.to_dense()?;
            Ok((
                GpuWeight::upload_sparse(gpu, &format!("w.{}", sf.name()), &t)?,
                deq,
            ))
        }
    }
}

/// A row length with an odd number of blocks (dense: of 8-wide units).
pub fn odd_k(fmt: WeightFormat) -> usize {
    if fmt.block_size() == 256 {
        return 256 * 3;
    }
    if fmt.block_size() == 1 {
        8 * 13
    } else {
        32 * 5
    }
}

fn run(gpu: &Gpu, sb: &StepBuffer, st: &Step, d: &[Dispatch]) -> Result<()> {
    gpu.run(sb, st, d)
}

async fn case(
    out: &mut Vec<CaseResult>,
    tier: &str,
    kernel: &str,
    format: &str,
    variant: &str,
    f: impl Future<Output = Result<Check>>,
) {
    let t0 = Instant::now();
    let r = f.await;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let (max_abs, max_rel, passed, detail) = match r {
        Ok(c) => (
            c.max_abs,
            c.max_rel,
            c.fail.is_none(),
            c.fail.unwrap_or_default(),
        ),
        Err(e) => (f32::NAN, f32::NAN, false, e.to_string()),
    };
    out.push(CaseResult {
        kernel: kernel.into(),
        format: format.into(),
        variant: variant.into(),
        tier: tier.into(),
        max_abs,
        max_rel,
        passed,
        ms,
        detail,
    });
}

async fn read<T: bytemuck::Pod>(gpu: &Gpu, t: &crate::gpu::Tensor) -> Result<Vec<T>> {
    gpu.read_async(t, 0, t.bytes).await
}

/// Runs the suite on `gpu` (its tier as created), blocking until done.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_suite(gpu: &mut Gpu, quick: bool) -> Vec<CaseResult> {
    pollster::block_on(run_suite_async(gpu, quick))
}

/// Runs the suite on `gpu` (its tier as created). `quick` keeps one shape per
/// case. Both matvec/matmul variants are checked whatever the adapter's default.
pub async fn run_suite_async(gpu: &mut Gpu, quick: bool) -> Vec<CaseResult> {
    let default_variant = gpu.matvec;
    let tier = gpu.tier.name().to_string();
    let mut out = Vec::new();
    let shapes: &[(usize, usize)] = if quick {
        &[(37, 7)]
    } else {
        &[(1, 1), (37, 7), (203, 13)]
    };
    for variant in [MatvecVariant::Lanes, MatvecVariant::Rows] {
        gpu.matvec = variant;
        let g: &Gpu = gpu;
        let vname0 = format!("{variant:?}").to_lowercase();
        for kind in WeightKind::all() {
            let vname = format!("{vname0}{}", kind.layout_suffix(g));
            for &(n, t) in shapes {
                for acc in [false, true] {
                    let seed = (n * 31 + t + acc as usize) as u64;
                    // x itself, and the decode projection's fused inputs (on
                    // CPU adapters with subgroups; elsewhere their own pass),
                    // those on one shape.
                    for (ii, input) in ["", "rmsnorm", "swiglu", "geglu"].into_iter().enumerate() {
                        if ii > 0 && n != 37 {
                            continue;
                        }
                        let seed = if ii == 0 {
                            seed
                        } else {
                            seed + 500 + ii as u64
                        };
                        let variant = match ii {
                            0 => vname.clone(),
                            _ => format!("{vname} {input}"),
                        };
                        case(
                            &mut out,
                            &tier,
                            "matvec",
                            &kind.name(),
                            &variant,
                            async move {
                                let gpu = g;
                                let sb = StepBuffer::new(gpu);
                                let mut rng = Rng::new(seed);
                                let k = kind.proj_k(n);
                                let (w, deq) = random_kind_weight(gpu, &mut rng, kind, n, k)?;
                                let x = match ii {
                                    0 => rng.vec(k, 1.0),
                                    1 => rng.vec(k, 1.5),
                                    _ => rng.vec(2 * k, 1.5),
                                };
                                let gw = if ii == 1 { rng.vec(k, 1.0) } else { Vec::new() };
                                let y0 = rng.vec(n, 1.0);
                                let xt = gpu.upload("x", &x)?;
                                let (gt, yt) = (gpu.upload("g", &gw)?, gpu.upload("y", &y0)?);
                                let scratch = gpu.zeros("scratch", k as u64 * 4)?;
                                let pi = match ii {
                                    0 => ops::ProjInput::Plain,
                                    1 => ops::ProjInput::RmsNorm {
                                        g: &gt,
                                        eps: 1e-5,
                                        scratch: &scratch,
                                    },
                                    _ => ops::ProjInput::Gated {
                                        gelu: ii == 3,
                                        scratch: &scratch,
                                    },
                                };
                                let o = MatvecOpts {
                                    accumulate: acc,
                                    ..Default::default()
                                };
                                run(
                                    gpu,
                                    &sb,
                                    &step(1, 0),
                                    &ops::matvec_from(gpu, &sb, &w, &xt, &yt, o, pi)?,
                                )?;
                                let xin = match ii {
                                    0 => x.clone(),
                                    1 => cpu::rmsnorm(&x, &gw, k, 1e-5),
                                    2 => cpu::swiglu(&x[..k], &x[k..]),
                                    _ => cpu::geglu(&x[..k], &x[k..]),
                                };
                                let mut want = cpu::matmul(&xin, &deq, 1, n, k);
                                if acc {
                                    want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
                                }
                                Ok(compare(
                                    format!("n={n} k={k} acc={acc} {input}").trim_end(),
                                    &read::<f32>(gpu, &yt).await?,
                                    &want,
                                    1e-4,
                                    1e-4,
                                ))
                            },
                        )
                        .await;
                    }
                    case(
                        &mut out,
                        &tier,
                        "matmul",
                        &kind.name(),
                        &vname,
                        async move {
                            let gpu = g;
                            let sb = StepBuffer::new(gpu);
                            let mut rng = Rng::new(seed + 1000);
                            let k = kind.proj_k(n);
                            let (w, deq) = random_kind_weight(gpu, &mut rng, kind, n, k)?;
                            let x = rng.vec(t * k, 1.0);
                            let y0 = rng.vec(t * n, 1.0);
                            let (xt, yt) = (gpu.upload("x", &x)?, gpu.upload("y", &y0)?);
                            run(
                                gpu,
                                &sb,
                                &step(t as u32, 0),
                                &ops::matmul(gpu, &sb, &w, &xt, &yt, acc, t as u32)?,
                            )?;
                            let mut want = cpu::matmul(&x, &deq, t, n, k);
                            if acc {
                                want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
                            }
                            Ok(compare(
                                &format!("n={n} k={k} t={t} acc={acc}"),
                                &read::<f32>(gpu, &yt).await?,
                                &want,
                                1e-4,
                                1e-4,
                            ))
                        },
                    )
                    .await;
                }
            }
        }
    }
    gpu.matvec = default_variant;
    let g: &Gpu = gpu;
    // The lookup reads whatever layout the projections were given (a tied
    // embedding is the LM head), so block formats run in both.
    let mut lookups = Vec::new();
    for kind in WeightKind::all() {
        match kind {
            WeightKind::Dense(f) if f.block_words().is_some() => {
                lookups.push((kind, Some(WeightLayout::Rows)));
                lookups.push((kind, Some(WeightLayout::Tiled)));
            }
            _ => lookups.push((kind, None)),
        }
    }
    for (kind, layout) in lookups {
        let vname = match layout {
            None => "",
            Some(WeightLayout::Rows) => "rows layout",
            Some(WeightLayout::Tiled) => "tiled",
        };
        case(&mut out, &tier, "embed", &kind.name(), vname, async move {
            let gpu = g;
            let sb = StepBuffer::new(gpu);
            let mut rng = Rng::new(4);
            let (vocab, d) = (29usize, kind.embed_d());
            let (w, deq) = match (kind, layout) {
                (WeightKind::Dense(f), Some(l)) => random_weight_as(gpu, &mut rng, f, vocab, d, l)?,
                _ => random_kind_weight(gpu, &mut rng, kind, vocab, d)?,
            };
            let toks: Vec<u32> = (0..7)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect();
            let (tt, out) = (
                gpu.upload("tokens", &toks)?,
                gpu.zeros("out", (toks.len() * d * 4) as u64)?,
            );
            run(
                gpu,
                &sb,
                &step(toks.len() as u32, 0),
                &ops::embed(gpu, &sb, &w, &tt, &out, toks.len() as u32)?,
            )?;
            let want: Vec<f32> = toks
                .iter()
                .flat_map(|t| deq[*t as usize * d..][..d].to_vec())
                .collect();
            Ok(compare(
                "rows",
                &read::<f32>(gpu, &out).await?,
                &want,
                0.0,
                0.0,
            ))
        })
        .await;
    }
    for (d, t) in if quick {
        vec![(83usize, 3usize)]
    } else {
        vec![(83, 3), (576, 2), (1000, 1)]
    } {
        case(&mut out, &tier, "rmsnorm", "f32", "", async move {
            let gpu = g;
            let sb = StepBuffer::new(gpu);
            let mut rng = Rng::new(5);
            let (x, g) = (rng.vec(t * d, 2.0), rng.vec(d, 1.0));
            let (xt, gt, yt) = (
                gpu.upload("x", &x)?,
                gpu.upload("g", &g)?,
                gpu.zeros("y", (t * d * 4) as u64)?,
            );
            run(
                gpu,
                &sb,
                &step(t as u32, 0),
                &[ops::rmsnorm(
                    gpu, &sb, &gt, &xt, &yt, d as u32, 1e-5, t as u32,
                )?],
            )?;
            Ok(compare(
                &format!("d={d}"),
                &read::<f32>(gpu, &yt).await?,
                &cpu::rmsnorm(&x, &g, d, 1e-5),
                1e-5,
                1e-4,
            ))
        })
        .await;
    }
    // Odd head counts and widths; the value heads must come back untouched.
    for (nq, nkv, hd, t) in [(3usize, 1usize, 7usize, 3usize), (6, 2, 24, 2)] {
        case(&mut out, &tier, "head_rmsnorm", "f32", "", async move {
            let gpu = g;
            let sb = StepBuffer::new(gpu);
            let mut rng = Rng::new(41);
            let w = (nq + 2 * nkv) * hd;
            let (x, g) = (rng.vec(t * w, 3.0), rng.vec(2 * hd, 1.5));
            let (xt, gt) = (gpu.upload("qkv", &x)?, gpu.upload("g", &g)?);
            run(
                gpu,
                &sb,
                &step(t as u32, 0),
                &[ops::head_rmsnorm(
                    gpu,
                    &sb,
                    &gt,
                    &xt,
                    (nq as u32, nkv as u32, hd as u32),
                    1e-6,
                    t as u32,
                )?],
            )?;
            let mut want = x.clone();
            for row in want.chunks_exact_mut(w) {
                let (q, rest) = row.split_at_mut(nq * hd);
                let k = &mut rest[..nkv * hd];
                q.copy_from_slice(&cpu::rmsnorm(q, &g[..hd], hd, 1e-6));
                k.copy_from_slice(&cpu::rmsnorm(k, &g[hd..], hd, 1e-6));
            }
            Ok(compare(
                &format!("nq={nq} nkv={nkv} hd={hd}"),
                &read::<f32>(gpu, &xt).await?,
                &want,
                1e-5,
                1e-4,
            ))
        })
        .await;
    }
    // SwiGLU, and GeGLU on wide inputs that reach both tails of its tanh.
    for (name, seed, amp) in [("swiglu", 6u64, 3.0f32), ("geglu", 16, 12.0)] {
        case(&mut out, &tier, name, "f32", "", async move {
            let gpu = g;
            let sb = StepBuffer::new(gpu);
            let mut rng = Rng::new(seed);
            let (ff, t) = (77usize, 3usize);
            let gu = rng.vec(t * 2 * ff, amp);
            let (gt, h) = (gpu.upload("gu", &gu)?, gpu.zeros("h", (t * ff * 4) as u64)?);
            let op = if name == "geglu" {
                ops::geglu
            } else {
                ops::swiglu
            };
            run(
                gpu,
                &sb,
                &step(t as u32, 0),
                &[op(gpu, &sb, &gt, &h, ff as u32, t as u32)?],
            )?;
            let (mut g, mut u) = (vec![], vec![]);
            for r in gu.chunks_exact(2 * ff) {
                g.extend_from_slice(&r[..ff]);
                u.extend_from_slice(&r[ff..]);
            }
            let want = if name == "geglu" {
                cpu::geglu(&g, &u)
            } else {
                cpu::swiglu(&g, &u)
            };
            Ok(compare(
                name,
                &read::<f32>(gpu, &h).await?,
                &want,
                1e-5,
                1e-4,
            ))
        })
        .await;
    }
    case(
        &mut out,
        &tier,
        "rmsnorm_add+scale",
        "f32",
        "",
        async move {
            let gpu = g;
            let sb = StepBuffer::new(gpu);
            let mut rng = Rng::new(17);
            let (d, t) = (83usize, 3usize);
            let (x, gw, y0) = (rng.vec(t * d, 2.0), rng.vec(d, 1.0), rng.vec(t * d, 1.0));
            let (xt, gt, yt) = (
                gpu.upload("x", &x)?,
                gpu.upload("g", &gw)?,
                gpu.upload("y", &y0)?,
            );
            run(
                gpu,
                &sb,
                &step(t as u32, 0),
                &[
                    ops::scale(gpu, &sb, &xt, d as u32, 1.75, t as u32)?,
                    ops::rmsnorm_add(gpu, &sb, &gt, &xt, &yt, d as u32, 1e-6, t as u32)?,
                    // Two of the three rows: the third must stay as it was.
                    ops::softcap(gpu, &sb, &yt, d as u32, 1.5, 2)?,
                ],
            )?;
            let xs: Vec<f32> = x.iter().map(|v| v * 1.75).collect();
            let want: Vec<f32> = cpu::rmsnorm(&xs, &gw, d, 1e-6)
                .iter()
                .zip(&y0)
                .enumerate()
                .map(|(i, (a, b))| {
                    let y = (a + b) as f64;
                    if i < 2 * d {
                        (1.5 * (y / 1.5).tanh()) as f32
                    } else {
                        y as f32
                    }
                })
                .collect();
            let c = compare("scale", &read::<f32>(gpu, &xt).await?, &xs, 1e-6, 1e-6);
            if c.fail.is_some() {
                return Ok(c);
            }
            Ok(compare(
                "rmsnorm_add",
                &read::<f32>(gpu, &yt).await?,
                &want,
                1e-5,
                1e-4,
            ))
        },
    )
    .await;
    case(&mut out, &tier, "sumsq", "f32", "", async move {
        let gpu = g;
        let sb = StepBuffer::new(gpu);
        let mut rng = Rng::new(12);
        let (t, k, stride) = (5usize, 77usize, 83usize);
        let x = rng.vec(t * stride, 2.0);
        let s0 = rng.vec(k, 1.0);
        let (xt, st) = (gpu.upload("x", &x)?, gpu.upload("stats", &s0)?);
        run(
            gpu,
            &sb,
            &step(t as u32, 0),
            &[ops::sumsq(
                gpu,
                &sb,
                &xt,
                &st,
                k as u32,
                stride as u32,
                t as u32,
            )?],
        )?;
        let want: Vec<f32> = (0..k)
            .map(|i| {
                (s0[i] as f64
                    + (0..t)
                        .map(|r| (x[r * stride + i] as f64).powi(2))
                        .sum::<f64>()) as f32
            })
            .collect();
        Ok(compare(
            "sumsq",
            &read::<f32>(gpu, &st).await?,
            &want,
            1e-4,
            1e-5,
        ))
    })
    .await;
    case(&mut out, &tier, "gram", "f32", "", async move {
        let gpu = g;
        let sb = StepBuffer::new(gpu);
        let mut rng = Rng::new(13);
        let (t, k, stride) = (6usize, 37usize, 41usize);
        let x = rng.vec(t * stride, 2.0);
        let g0 = rng.vec(k * k, 1.0);
        let (xt, gt) = (gpu.upload("x", &x)?, gpu.upload("gram", &g0)?);
        run(
            gpu,
            &sb,
            &step(t as u32, 0),
            &[ops::gram(
                gpu,
                &sb,
                &xt,
                &gt,
                k as u32,
                stride as u32,
                t as u32,
            )?],
        )?;
        let want: Vec<f32> = (0..k * k)
            .map(|ij| {
                let (i, j) = (ij / k, ij % k);
                (g0[ij] as f64
                    + (0..t)
                        .map(|r| x[r * stride + i] as f64 * x[r * stride + j] as f64)
                        .sum::<f64>()) as f32
            })
            .collect();
        Ok(compare(
            "gram",
            &read::<f32>(gpu, &gt).await?,
            &want,
            1e-4,
            1e-5,
        ))
    })
    .await;
    for (d, t) in if quick {
        vec![(83usize, 5usize)]
    } else {
        vec![(83, 5), (384, 3), (1, 2)]
    } {
        case(&mut out, &tier, "layernorm", "f32", "", async move {
            let gpu = g;
            let sb = StepBuffer::new(gpu);
            let mut rng = Rng::new(13 + d as u64);
            let (x, r) = (rng.vec(t * d, 2.0), rng.vec(t * d, 1.0));
            let (b, gm, beta) = (rng.vec(d, 0.5), rng.vec(d, 1.0), rng.vec(d, 0.3));
            let up = |l: &str, v: &[f32]| gpu.upload(l, v);
            let (xt, rt, bt, gt, bet) = (
                up("x", &x)?,
                up("r", &r)?,
                up("b", &b)?,
                up("g", &gm)?,
                up("beta", &beta)?,
            );
            let yt = gpu.zeros("y", (t * d * 4) as u64)?;
            run(
                gpu,
                &sb,
                &step(t as u32, 0),
                &[ops::layernorm(
                    gpu, &sb, &xt, &bt, &rt, &gt, &bet, &yt, d as u32, 1e-12, t as u32,
                )?],
            )?;
            // d = 1 normalises to exactly beta: the variance is zero.
            Ok(compare(
                &format!("d={d}"),
                &read::<f32>(gpu, &yt).await?,
                &cpu::layernorm(&x, &b, &r, &gm, &beta, d, 1e-12),
                1e-5,
                1e-4,
            ))
        })
        .await;
    }
    for act in [ops::Activation::Identity, ops::Activation::Gelu] {
        let name = format!("{act:?}").to_lowercase();
        let what = name.clone();
        case(&mut out, &tier, "bias_act", "f32", &name, async move {
            let gpu = g;
            let sb = StepBuffer::new(gpu);
            let mut rng = Rng::new(14);
            let (n, t) = (77usize, 3usize);
            // Wide inputs reach both tails of the GELU.
            let x = rng.vec(t * n, 4.0);
            let b = rng.vec(n, 1.0);
            let (xt, bt) = (gpu.upload("x", &x)?, gpu.upload("b", &b)?);
            run(
                gpu,
                &sb,
                &step(t as u32, 0),
                &[ops::bias_act(gpu, &sb, &bt, &xt, n as u32, act, t as u32)?],
            )?;
            let want: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let v = v + b[i % n];
                    match act {
                        ops::Activation::Identity => v,
                        ops::Activation::Gelu => cpu::gelu(v),
                    }
                })
                .collect();
            Ok(compare(
                &what,
                &read::<f32>(gpu, &xt).await?,
                &want,
                1e-6,
                1e-5,
            ))
        })
        .await;
    }
    for (n_head, hd, lens, seq_len) in if quick {
        vec![(3usize, 7usize, vec![5usize, 1, 3], 5usize)]
    } else {
        vec![
            (3, 7, vec![5, 1, 3], 5),
            (2, 32, vec![9, 17, 4], 17),
            (1, 64, vec![1], 1),
        ]
    } {
        case(
            &mut out,
            &tier,
            "encoder_attention",
            "f32",
            &format!("hd={hd}"),
            async move {
                let gpu = g;
                let sb = StepBuffer::new(gpu);
                let mut rng = Rng::new(15 + hd as u64);
                let d = n_head * hd;
                let tokens = lens.len() * seq_len;
                let qkv = rng.vec(tokens * 3 * d, 1.0);
                let mut seq = vec![lens.len() as u32, seq_len as u32];
                seq.extend(lens.iter().map(|&l| l as u32));
                let (qt, st) = (gpu.upload("qkv", &qkv)?, gpu.upload("seq", &seq)?);
                // Garbage in the output proves padding rows are written.
                let ot = gpu.upload("out", &rng.vec(tokens * d, 1.0))?;
                run(
                    gpu,
                    &sb,
                    &step(tokens as u32, 0),
                    &[ops::encoder_attention(
                        gpu,
                        &sb,
                        n_head as u32,
                        hd as u32,
                        &qt,
                        &st,
                        &ot,
                        tokens as u32,
                    )?],
                )?;
                Ok(compare(
                    &format!("heads={n_head} hd={hd} lens={lens:?} L={seq_len}"),
                    &read::<f32>(gpu, &ot).await?,
                    &cpu::encoder_attention(&qkv, &lens, seq_len, n_head, hd),
                    1e-5,
                    1e-4,
                ))
            },
        )
        .await;
    }
    for normalize in [false, true] {
        let name = if normalize { "normalize" } else { "mean" };
        case(&mut out, &tier, "mean_pool", "f32", name, async move {
            let gpu = g;
            let sb = StepBuffer::new(gpu);
            let mut rng = Rng::new(16);
            let (d, seq_len, lens) = (83usize, 6usize, vec![6usize, 1, 4, 2]);
            let tokens = lens.len() * seq_len;
            let x = rng.vec(tokens * d, 1.0);
            let mut seq = vec![lens.len() as u32, seq_len as u32];
            seq.extend(lens.iter().map(|&l| l as u32));
            // Room for more sequences than this batch holds: the extra rows stay untouched.
            let max_seqs = lens.len() as u32 + 3;
            seq.resize(2 + max_seqs as usize, 0);
            let (xt, st) = (gpu.upload("x", &x)?, gpu.upload("seq", &seq)?);
            let ot = gpu.zeros("out", max_seqs as u64 * d as u64 * 4)?;
            run(
                gpu,
                &sb,
                &step(tokens as u32, 0),
                &[ops::mean_pool(
                    gpu, &sb, &xt, &st, &ot, d as u32, max_seqs, normalize,
                )?],
            )?;
            let mut want = cpu::mean_pool(&x, &lens, seq_len, d, normalize);
            want.resize(max_seqs as usize * d, 0.0);
            Ok(compare(
                name,
                &read::<f32>(gpu, &ot).await?,
                &want,
                1e-6,
                1e-5,
            ))
        })
        .await;
    }
    case(
        &mut out,
        &tier,
        "sample",
        "f32",
        "greedy+penalty",
        sampler_greedy_case(g),
    )
    .await;
    case(
        &mut out,
        &tier,
        "sample",
        "f32",
        "top-k/top-p/min-p",
        sampler_distribution_case(g),
    )
    .await;
    case(
        &mut out,
        &tier,
        "sample",
        "f32",
        "grammar mask",
        sampler_mask_case(g),
    )
    .await;
    // Quantize-on-write, bit for bit against the CPU quantizer, for every
    // cache type (K and V take separate code paths).
    let append_hd: &[u32] = if quick { &[64] } else { &[64, 96, 38] };
    case(
        &mut out,
        &tier,
        "kv append",
        "kivi2 k",
        "hd 64: packed groups and f16 rows, bit-exact",
        kivi_append_case(gpu),
    )
    .await;
    case(
        &mut out,
        &tier,
        "snap_score+kv_gather",
        "q8_0/f16",
        "heads 4/2 hd 32, window 8 of 40: scores, then compaction bit-exact",
        snapkv_case(gpu),
    )
    .await;
    // The append kernel has a layout per variant (a workgroup per row under
    // Lanes, an invocation per row under Rows): the adapter's own on every
    // shape, the other at head 64, except on GL, where each variant takes
    // seconds to compile on llvmpipe (the attention cases below still run
    // both layouts there, for the quick mixes).
    let gl = gpu.adapter.backend.eq_ignore_ascii_case("gl");
    let own = gpu.matvec;
    let other = match own {
        MatvecVariant::Lanes => MatvecVariant::Rows,
        MatvecVariant::Rows => MatvecVariant::Lanes,
    };
    for variant in [own, other] {
        gpu.matvec = variant;
        let vname = format!("{variant:?}").to_lowercase();
        for t in KvDtype::ALL {
            for &hd in append_hd {
                if t.check(hd).is_err() || (variant != own && (hd != 64 || gl)) {
                    continue;
                }
                case(
                    &mut out,
                    &tier,
                    "kv append",
                    t.name(),
                    &format!("{vname} hd {hd}: bit-exact with the CPU quantizer"),
                    kv_append_case(gpu, t, hd),
                )
                .await;
            }
        }
    }
    gpu.matvec = own;
    // Attention on both kernel variants: prefill picks the CPU tile kernel
    // under `Rows`, decode the split one under both.
    let shapes: &[(u32, u32, u32)] = if quick {
        &[(6, 2, 38), (5, 1, 64)]
    } else {
        &[(6, 2, 38), (5, 1, 64), (4, 4, 16), (3, 1, 96)]
    };
    let q = KvDtype::Q8_0;
    // The cache kernels have no tier- or backend-specific code (packed words
    // on every tier, no subgroups), so the whole type matrix runs once, on
    // the portable tier of a non-GL backend (`lottery doctor --tier
    // portable`); other tiers and GL run the quick set (f16, q8_0/q4_0, the
    // ring, Quest, and every type's append), each far slower to compile.
    let kv_matrix = !quick
        && gpu.tier == crate::Tier::Portable
        && !gpu.adapter.backend.eq_ignore_ascii_case("gl");
    let quick_mixes = vec![KvDtype::F16.into(), KvTypes::new(q, KvDtype::Q4_0)];
    let mixes: Vec<KvTypes> = if !kv_matrix {
        quick_mixes.clone()
    } else {
        let mut m: Vec<KvTypes> = KvDtype::ALL.into_iter().map(KvTypes::from).collect();
        m.push(KvTypes::new(q, KvDtype::Q4_0));
        m.push(KvTypes::new(KvDtype::F16, KvDtype::IQ4_NL));
        // The same cache without the rotation.
        m.push(KvTypes {
            rotate: false,
            ..KvTypes::new(KvDtype::Q4_0, KvDtype::Q5_0)
        });
        m
    };
    for variant in [MatvecVariant::Lanes, MatvecVariant::Rows] {
        gpu.matvec = variant;
        let vname = format!("{variant:?}").to_lowercase();
        for &(nh, nkv, hd) in shapes {
            for &kv in &mixes {
                if kv.k.check(hd).is_err() || kv.v.check(hd).is_err() {
                    continue;
                }
                // At head 96 (not a power of two: never rotated) two block
                // mixes cover what differs from 64: odd block counts per row.
                let covered_at_96 = kv == KvTypes::new(q, KvDtype::Q4_0) || !kv.rotate;
                if hd == 96 && kv.k.blocked() && !covered_at_96 {
                    continue;
                }
                // The CPU tile kernel decodes through the same kv_read code
                // as the split one, and each of its variants takes seconds to
                // compile on llvmpipe: the quick mixes (and f32) cover it.
                if variant == MatvecVariant::Rows && kv.k.blocked() && !quick_mixes.contains(&kv) {
                    continue;
                }
                case(
                    &mut out,
                    &tier,
                    "rope_kv+attention",
                    &format!("kv {}", kv.label()),
                    &format!("{vname} heads {nh}/{nkv} hd {hd}: prefill+split decode"),
                    attention_case(
                        gpu,
                        (nh, nkv, hd),
                        kv,
                        KvPolicy::Full,
                        Default::default(),
                        quick,
                    ),
                )
                .await;
            }
        }
        // A ring that wraps several times, against the reference's mask.
        let ring = KvPolicy::SinkWindow {
            sink: 3,
            window: 20,
        };
        let kv = KvTypes::new(KvDtype::Q8_0, KvDtype::Q4_1);
        case(
            &mut out,
            &tier,
            "rope_kv+attention",
            &format!("kv {}", kv.label()),
            &format!("{vname} heads 5/1 hd 64: {}", ring.label()),
            attention_case(gpu, (5, 1, 64), kv, ring, Default::default(), quick),
        )
        .await;
        // Quest's bounds, page choice and paged attention against the CPU's choice.
        let quest = KvPolicy::Quest { page: 8, top: 3 };
        let kv = KvTypes::new(KvDtype::F16, KvDtype::Q4_0);
        case(
            &mut out,
            &tier,
            "rope_kv+attention",
            &format!("kv {}", kv.label()),
            &format!("{vname} heads 4/2 hd 64: {}", quest.label()),
            attention_case(gpu, (4, 2, 64), kv, quest, Default::default(), quick),
        )
        .await;
        // A layer's own sliding window and score scale (Gemma's local
        // layers), in prefill tiles and decode chunks past the window.
        let layer = ops::LayerAttn {
            window: 9,
            scale: Some(0.3),
            softcap: 0.9,
            ..Default::default()
        };
        let kv = KvTypes::new(KvDtype::F16, KvDtype::Q8_0);
        case(
            &mut out,
            &tier,
            "rope_kv+attention",
            &format!("kv {}", kv.label()),
            &format!("{vname} heads 4/2 hd 64: layer window 9, scale 0.3, softcap 0.9"),
            attention_case(gpu, (4, 2, 64), kv, KvPolicy::Full, layer, quick),
        )
        .await;
    }
    gpu.matvec = default_variant;
    out
}

/// Rope + cache append + attention for a prefill followed by decode steps
/// split into key chunks, against the CPU reference.
async fn attention_case(
    gpu: &Gpu,
    (n_head, n_kv_head, head_dim): (u32, u32, u32),
    kv: KvTypes,
    policy: KvPolicy,
    layer: ops::LayerAttn,
    quick: bool,
) -> Result<Check> {
    let sb = StepBuffer::new(gpu);
    let mut rng = Rng::new(7 + head_dim as u64);
    let ring = policy.evicts();
    // As the model graph sets it: Quest's page list selects keys in decode.
    let layer = ops::LayerAttn {
        pages_selected: matches!(policy, KvPolicy::Quest { .. }),
        ..layer
    };
    let s = AttnShape {
        n_head,
        n_kv_head,
        head_dim,
        // The ring: 40 slots for 57 positions.
        ctx: if ring { 40 } else { 90 },
        kv,
    };
    let (nh, nkv, hd) = (n_head as usize, n_kv_head as usize, head_dim as usize);
    let w = s.qkv_width() as usize;
    let table = cpu::rope_table(90, hd, 10000.0);
    let tt = gpu.upload("rope", &table.iter().flat_map(|c| *c).collect::<Vec<f32>>())?;
    let cache = KvCache::new(gpu, 1, s, policy)?;
    let max_t = 71u32;
    let qkv_t = gpu.zeros("qkv", max_t as u64 * w as u64 * 4)?;
    let part = gpu.zeros("part", ops::attention_part_bytes(&s, max_t as u64 * 8))?;
    let out = gpu.zeros("out", max_t as u64 * (nh * hd) as u64 * 4)?;
    let graph = |prefill: bool| -> Result<Vec<Dispatch>> {
        let mut d = Vec::new();
        if prefill && kv.centres_k() {
            d.push(ops::kv_centre(
                gpu,
                &sb,
                &s,
                &tt,
                &qkv_t,
                &cache.k[0],
                max_t,
            )?);
        }
        d.push(ops::rope_kv(
            gpu,
            &sb,
            &s,
            &tt,
            &qkv_t,
            cache.bind(0),
            max_t,
        )?);
        if kv.k == KvDtype::KIVI2 {
            d.push(ops::kivi_pack(gpu, &sb, &s, &cache.k[0])?);
        }
        if let KvPolicy::Quest { page, top } = policy {
            d.push(ops::kv_bounds(
                gpu,
                &sb,
                &s,
                cache.bind(0),
                &cache.bounds[0],
                page,
            )?);
            if !prefill {
                d.push(ops::quest_select(
                    gpu,
                    &sb,
                    &s,
                    &qkv_t,
                    &cache.bounds[0],
                    &cache.pages,
                    page,
                    top,
                )?);
            }
        }
        d.extend(ops::attention(
            gpu,
            &sb,
            &s,
            &qkv_t,
            cache.bind(0),
            &part,
            &out,
            prefill,
            layer,
        )?);
        Ok(d)
    };
    let (prefill, decode) = (graph(true)?, graph(false)?);
    let (mut all_k, mut all_v) = (Vec::new(), Vec::new());
    // The key mean of centred keys, as the GPU computed it at pos 0.
    let mut centre = vec![0f32; nkv * hd];
    // Keys and values share a per-channel offset, as real ones do, so a
    // centred cache stores rows far from the raw ones (not for KIVI2, whose
    // per-channel keys the CPU encodes per token: see step_bound).
    let kivi = kv.k == KvDtype::KIVI2 || kv.v == KvDtype::KIVI2;
    let offset = rng.vec(2 * nkv * hd, if kivi { 0.0 } else { 2.0 });
    let mut pos = 0usize;
    let mut worst = Check {
        max_abs: 0.0,
        max_rel: 0.0,
        fail: None,
    };
    let steps: &[(usize, u32)] = if matches!(policy, KvPolicy::Quest { .. }) {
        // Decode steps past 7 pages of 8: the selection is active.
        &[(60, 0), (1, 16), (1, 16), (1, 7), (1, 5), (3, 0), (1, 16)]
    } else if ring {
        // Batches of at most slots - sink - window + 1 = 18, none straddling the sink.
        &[
            (3, 0),
            (15, 0),
            (1, 16),
            (1, 16),
            (13, 0),
            (1, 7),
            (17, 0),
            (1, 5),
            (1, 5),
            (4, 0),
        ]
    } else if quick {
        &[(21, 0), (1, 16), (5, 0)]
    } else {
        // A second prefill after decode steps checks the causal offset.
        &[(71, 0), (1, 16), (1, 16), (13, 0), (1, 7)]
    };
    for &(t, chunk) in steps {
        let mut qkv = rng.vec(t * w, 1.0);
        for r in qkv.chunks_exact_mut(w) {
            r[nh * hd..]
                .iter_mut()
                .zip(&offset)
                .for_each(|(x, o)| *x += o);
        }
        gpu.queue
            .write_buffer(&qkv_t.buffer, 0, bytemuck::cast_slice(&qkv));
        let kv_len = (pos + t) as u32;
        let chunk_len = if chunk == 0 { kv_len } else { chunk };
        let mut st = Step {
            n_tokens: t as u32,
            pos0: pos as u32,
            kv_len,
            chunk_len,
            n_chunks: kv_len.div_ceil(chunk_len),
            ..Default::default()
        };
        let plan = policy.plan(pos as u32, t as u32, s.ctx, chunk != 0);
        plan.apply(&mut st);
        st.n_chunks = plan.n_visit.div_ceil(chunk_len);
        run(gpu, &sb, &st, if chunk == 0 { &prefill } else { &decode })?;
        let (mut q, mut k, mut v) = (vec![], vec![], vec![]);
        for r in qkv.chunks_exact(w) {
            q.extend_from_slice(&r[..nh * hd]);
            k.extend_from_slice(&r[nh * hd..(nh + nkv) * hd]);
            v.extend_from_slice(&r[(nh + nkv) * hd..]);
        }
        cpu::rope(&mut q, nh, hd, pos, &table);
        cpu::rope(&mut k, nkv, hd, pos, &table);
        // The rows the cache now holds for this batch, as attention reads
        // them (decoded, turned back), next to the CPU's own encoding of the
        // CPU-rotated rows: the same up to a rounding step where rotation
        // order moved a value across a boundary (the bit-exact check of the
        // encoding is `kv append`). The reference then attends over the
        // stored values, so the check isolates the attention kernels.
        let (kw, vw, slot_pos): (Vec<u32>, Vec<u32>, Vec<u32>) = (
            read(gpu, &cache.k[0]).await?,
            read(gpu, &cache.v[0]).await?,
            read(gpu, &cache.pos).await?,
        );
        let (rwk, rwv) = (
            kv.k.row_words(head_dim) as usize,
            kv.v.row_words(head_dim) as usize,
        );
        if kv.centres_k() && pos == 0 {
            let off = s.k_centre_offset() as usize / 4;
            let got: Vec<f32> = kw[off..off + nkv * hd]
                .iter()
                .map(|w| f32::from_bits(*w))
                .collect();
            let want = kv.key_centre(&k, nkv, hd);
            let c = compare("key centre", &got, &want, 1e-5, 1e-5);
            if c.fail.is_some() {
                return Ok(c);
            }
            centre = got;
        }
        // Slot 0's rows are read from their exact copy when the types keep
        // one (KvTypes::sink), after the rows (and the key mean).
        let stored = |words: &[u32],
                      rw: usize,
                      ty: KvDtype,
                      rot: bool,
                      row: usize,
                      sink: Option<u64>|
         -> Result<Vec<f32>> {
            let x = match sink {
                Some(off) if row.is_multiple_of(s.ctx as usize) => {
                    floats(words, off as usize / 4 + row / s.ctx as usize * hd, hd)
                }
                _ => ty.decode_row(&words[row * rw..(row + 1) * rw], head_dim)?,
            };
            Ok(if rot { kv::hadamard(&x) } else { x })
        };
        let k_sink = kv.sink_k().then(|| s.k_sink_offset());
        let v_sink = kv.sink_v().then(|| s.v_sink_offset());
        all_k.resize((pos + t) * nkv * hd, 0.0);
        all_v.resize((pos + t) * nkv * hd, 0.0);
        let mut drift = 0f32;
        for (slot, &p) in slot_pos.iter().enumerate() {
            let p = p as usize;
            if p >= pos + t {
                continue;
            }
            for h in 0..nkv {
                let row = h * s.ctx as usize + slot;
                let sk = if kv.k == KvDtype::KIVI2 {
                    kv::kivi_decode_k(
                        &kw,
                        head_dim,
                        s.ctx,
                        h as u32,
                        slot as u32,
                        (pos + t) as u32,
                    )
                } else {
                    stored(&kw, rwk, kv.k, kv.rot_k(head_dim), row, k_sink)?
                };
                let sv = stored(&vw, rwv, kv.v, kv.rot_v(head_dim), row, v_sink)?;
                if p >= pos {
                    let i = (p - pos) * nkv * hd + h * hd;
                    let kc: Vec<f32> = k[i..i + hd]
                        .iter()
                        .zip(&centre[h * hd..(h + 1) * hd])
                        .map(|(a, m)| a - m)
                        .collect();
                    let vc = &v[i..i + hd];
                    // The exact copy of slot 0 against the unquantized row.
                    let exact = |on: bool, x: &[f32], e: Result<Vec<f32>>| {
                        if on && slot == 0 {
                            Ok(x.to_vec())
                        } else {
                            e
                        }
                    };
                    let ek = exact(kv.sink_k(), &kc, kv.effective_k(&kc))?;
                    let ev = exact(kv.sink_v(), vc, kv.effective_v(vc))?;
                    for (a, b) in sk.iter().zip(&ek).chain(sv.iter().zip(&ev)) {
                        drift = drift.max((a - b).abs());
                    }
                }
                all_k[(p * nkv + h) * hd..][..hd].copy_from_slice(&sk);
                all_v[(p * nkv + h) * hd..][..hd].copy_from_slice(&sv);
            }
        }
        // One quantization step of these N(0,1) rows at most.
        let step_bound = |ty: KvDtype| -> f32 {
            match ty {
                KvDtype::F32 => 1e-5,
                KvDtype::F16 => 4e-3,
                KvDtype::Q8_0 => 0.05,
                // Keys per channel against the CPU's per-token codes: two
                // different 2-bit encodings of the same rows.
                KvDtype::KIVI2 => 2.5,
                _ => 0.6,
            }
        };
        if drift > step_bound(kv.k).max(step_bound(kv.v)) {
            return Ok(mismatch(format!(
                "stored rows at pos {pos}: {drift} from the CPU encoding of the same rows"
            )));
        }
        let want = if let (KvPolicy::Quest { page, top }, true) = (policy, chunk != 0) {
            quest_reference(
                &q,
                &all_k,
                &all_v,
                pos,
                (nh, nkv, hd),
                page as usize,
                top as usize,
            )
        } else {
            // A layer's own scale is the reference's 1 / sqrt(hd) on scaled queries.
            let qs: Vec<f32> = match layer.scale {
                Some(sc) => q.iter().map(|x| x * sc * (hd as f32).sqrt()).collect(),
                None => q.clone(),
            };
            let lw = layer.window as usize;
            cpu::attention_capped(
                &qs,
                &all_k,
                &all_v,
                t,
                pos,
                (nh, nkv, hd),
                layer.softcap,
                &|_, q, k| {
                    if lw > 0 {
                        k <= q && q - k < lw
                    } else {
                        policy.visible(q, k)
                    }
                },
            )
        };
        let tol = 1e-4;
        let got: Vec<f32> = read(gpu, &out).await?;
        let c = compare(
            &format!("attention t={t} pos0={pos} chunk={chunk_len}"),
            &got[..t * nh * hd],
            &want,
            tol,
            tol,
        );
        let got_qkv: Vec<f32> = read(gpu, &qkv_t).await?;
        let got_q: Vec<f32> = got_qkv
            .chunks_exact(w)
            .take(t)
            .flat_map(|r| r[..nh * hd].to_vec())
            .collect();
        // Turned keys turn the queries too (the kernels then see Hq).
        let want_q: Vec<f32> = if kv.rot_k(head_dim) {
            q.chunks_exact(hd).flat_map(kv::hadamard).collect()
        } else {
            q.clone()
        };
        let cq = compare("rotated q", &got_q, &want_q, 1e-5, 1e-5);
        for c in [c, cq] {
            worst.max_abs = worst.max_abs.max(c.max_abs);
            worst.max_rel = worst.max_rel.max(c.max_rel);
            worst.fail = worst.fail.or(c.fail);
        }
        pos += t;
    }
    Ok(worst)
}

/// KIVI2 keys: 40 tokens through rope_kv (identity rotation) and kivi_pack:
/// the first group of 32 packed per channel, word for word as the CPU packs
/// the same f16 rows; the other 8 still f16 rows.
async fn kivi_append_case(gpu: &Gpu) -> Result<Check> {
    let sb = StepBuffer::new(gpu);
    let (nh, nkv, hd) = (2u32, 2u32, 64u32);
    let s = AttnShape {
        n_head: nh,
        n_kv_head: nkv,
        head_dim: hd,
        ctx: 64,
        kv: KvTypes::new(KvDtype::KIVI2, KvDtype::F16),
    };
    let mut rng = Rng::new(77);
    let w = s.qkv_width() as usize;
    let t = 40usize;
    let qkv = rng.vec(t * w, 3.0);
    let table = vec![[1f32, 0f32]; s.ctx as usize * hd as usize / 2];
    let tt = gpu.upload("rope", &table.iter().flat_map(|c| *c).collect::<Vec<f32>>())?;
    let qkv_t = gpu.upload("qkv", &qkv)?;
    let cache = KvCache::new(gpu, 1, s, KvPolicy::Full)?;
    let d = [
        ops::rope_kv(gpu, &sb, &s, &tt, &qkv_t, cache.bind(0), t as u32)?,
        ops::kivi_pack(gpu, &sb, &s, &cache.k[0])?,
    ];
    run(gpu, &sb, &step(t as u32, 0), &d)?;
    let got: Vec<u32> = read(gpu, &cache.k[0]).await?;
    let f16 = |x: f32| half::f16::from_f32(x).to_f32();
    let key =
        |ti: usize, h: usize, d: usize| f16(qkv[ti * w + (nh as usize + h) * hd as usize + d]);
    let hdu = hd as usize;
    for h in 0..nkv as usize {
        let hb = h * kv::kivi_head_words(hd, s.ctx) as usize;
        for d in 0..hdu {
            let col: Vec<f32> = (0..32).map(|ti| key(ti, h, d)).collect();
            let (q, dd, m) = kv::kivi_quant(&col);
            let cw = kv::kivi_words(&q);
            let want = [cw[0], cw[1], dd as u32 | (m as u32) << 16];
            let at = [hb + d * 2, hb + d * 2 + 1, hb + 2 * hdu + d];
            for (a, w) in at.iter().zip(want) {
                if got[*a] != w {
                    return Ok(mismatch(format!(
                        "head {h} channel {d}: packed word {a} differs"
                    )));
                }
            }
        }
        for ti in 32..t {
            let dec = kv::kivi_decode_k(&got, hd, s.ctx, h as u32, ti as u32, t as u32);
            if (0..hdu).any(|d| dec[d] != key(ti, h, d)) {
                return Ok(mismatch(format!(
                    "head {h} token {ti}: residual row differs"
                )));
            }
        }
    }
    Ok(Check {
        max_abs: 0.0,
        max_rel: 0.0,
        fail: None,
    })
}

/// SnapKV on the GPU against the CPU: the window's attention to each
/// earlier position summed per KV head (on the keys as stored: rotated and
/// centred q8_0), then the compaction moving each head's kept rows, of
/// either type, to its first slots word for word.
async fn snapkv_case(gpu: &Gpu) -> Result<Check> {
    let sb = StepBuffer::new(gpu);
    let (nh, nkv, hd, ctx) = (4u32, 2u32, 32u32, 48u32);
    let s = AttnShape {
        n_head: nh,
        n_kv_head: nkv,
        head_dim: hd,
        ctx,
        kv: KvTypes::new(KvDtype::Q8_0, KvDtype::F16),
    };
    let (t, win) = (40usize, 8usize);
    let policy = KvPolicy::SnapKv {
        budget: 12,
        window: win as u32,
        kernel: 3,
    };
    let mut rng = Rng::new(91);
    let w = s.qkv_width() as usize;
    let qkv = rng.vec(t * w, 2.0);
    let table: Vec<f32> = (0..ctx as usize * hd as usize / 2)
        .flat_map(|i| {
            let a = (i % 7) as f32 * 0.3;
            [a.cos(), a.sin()]
        })
        .collect();
    let tt = gpu.upload("rope", &table)?;
    let qkv_t = gpu.upload("qkv", &qkv)?;
    let cache = KvCache::new(gpu, 1, s, policy)?;
    let (scores, stats) = cache
        .snap
        .as_ref()
        .expect("a snapkv cache has score buffers");
    let mut d = vec![ops::kv_centre(
        gpu,
        &sb,
        &s,
        &tt,
        &qkv_t,
        &cache.k[0],
        t as u32,
    )?];
    d.push(ops::rope_kv(
        gpu,
        &sb,
        &s,
        &tt,
        &qkv_t,
        cache.bind(0),
        t as u32,
    )?);
    run(gpu, &sb, &step(t as u32, 0), &d)?;
    // The queries as rope_kv left them (turned with the keys).
    let turned: Vec<f32> = read(gpu, &qkv_t).await?;
    let q_win = gpu.upload("qkv.window", &turned[(t - win) * w..])?;
    let d = ops::snap_score(
        gpu,
        &sb,
        &s,
        &q_win,
        cache.bind(0),
        stats,
        &scores[0],
        win as u32,
    )?;
    run(gpu, &sb, &step(win as u32, (t - win) as u32), &d)?;
    let got: Vec<f32> = read(gpu, &scores[0]).await?;
    let kw: Vec<u32> = read(gpu, &cache.k[0]).await?;
    let vw: Vec<u32> = read(gpu, &cache.v[0]).await?;
    let (rk, rv) = (s.kv.k.row_words(hd) as usize, s.kv.v.row_words(hd) as usize);
    let (hdu, group) = (hd as usize, (nh / nkv) as usize);
    // Keys as attention reads them: slot 0 from its exact copy, after the
    // rows and the key mean.
    let key = |h: usize, p: usize| -> Result<Vec<f32>> {
        if p == 0 && s.kv.sink_k() {
            let i = s.k_sink_offset() as usize / 4 + h * hd as usize;
            return Ok(floats(&kw, i, hd as usize));
        }
        let row = (h * ctx as usize + p) * rk;
        KvDtype::Q8_0.decode_row(&kw[row..row + rk], hd)
    };
    let scale = 1.0 / (hd as f64).sqrt();
    let lo = t - win;
    let mut want = vec![0f32; nkv as usize * lo];
    for kh in 0..nkv as usize {
        let keys: Vec<Vec<f32>> = (0..t).map(|p| key(kh, p)).collect::<Result<_>>()?;
        let mut acc = vec![0f64; lo];
        for g in 0..group {
            let h = kh * group + g;
            for i in 0..win {
                let qr = &turned[(lo + i) * w + h * hdu..][..hdu];
                let sc: Vec<f64> = keys[..=lo + i]
                    .iter()
                    .map(|k| {
                        qr.iter()
                            .zip(k)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|v| (v - m).exp()).sum();
                for p in 0..lo {
                    acc[p] += (sc[p] - m).exp() / z;
                }
            }
        }
        for p in 0..lo {
            want[kh * lo + p] = acc[p] as f32;
        }
    }
    let got: Vec<f32> = (0..nkv as usize)
        .flat_map(|kh| got[kh * ctx as usize..][..lo].to_vec())
        .collect();
    let c = compare("snap scores", &got, &want, 1e-5, 1e-4);
    if c.fail.is_some() {
        return Ok(c);
    }
    // Compaction: each head keeps its own 12 + the window, ascending.
    let n_keep = 12 + win;
    let mut keep = Vec::new();
    for kh in 0..nkv as usize {
        let mut sel = kv::snapkv_select(&want[kh * lo..(kh + 1) * lo], 12, 3);
        sel.extend(lo as u32..t as u32);
        keep.extend(sel);
    }
    cache.compact(gpu, &keep, n_keep as u32, t as u32)?;
    let kc: Vec<u32> = read(gpu, &cache.k[0]).await?;
    let vc: Vec<u32> = read(gpu, &cache.v[0]).await?;
    for kh in 0..nkv as usize {
        for (i, &slot) in keep[kh * n_keep..(kh + 1) * n_keep].iter().enumerate() {
            let (a, b) = (kh * ctx as usize + i, kh * ctx as usize + slot as usize);
            if kc[a * rk..(a + 1) * rk] != kw[b * rk..(b + 1) * rk]
                || vc[a * rv..(a + 1) * rv] != vw[b * rv..(b + 1) * rv]
            {
                return Ok(mismatch(format!(
                    "head {kh}: kept slot {i} does not hold slot {slot}'s row"
                )));
            }
        }
    }
    // The key mean and exact sink rows after the rows survive compaction.
    let (kt, vt) = (
        nkv as usize * ctx as usize * rk,
        nkv as usize * ctx as usize * rv,
    );
    if kc[kt..] != kw[kt..] || vc[vt..] != vw[vt..] {
        return Ok(mismatch("the key mean or the sink rows moved".into()));
    }
    Ok(c)
}

/// `n` f32 values stored as words from word `at` (a cache's mean or sink rows).
fn floats(words: &[u32], at: usize, n: usize) -> Vec<f32> {
    words[at..at + n]
        .iter()
        .map(|w| f32::from_bits(*w))
        .collect()
}

/// Quest's choice on the CPU for one decode token at `pos`: per query head
/// the `top` pages (after the first, before the current) whose key bounds
/// score highest against its query, then attention over those pages, the
/// first and the current.
fn quest_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: usize,
    (nh, nkv, hd): (usize, usize, usize),
    page: usize,
    top: usize,
) -> Vec<f32> {
    let g = nh / nkv;
    let cur = pos / page;
    let mut chosen = vec![vec![cur < top + 2; cur + 1]; nh];
    for (h, sel) in chosen.iter_mut().enumerate() {
        let kvh = h / g;
        sel[0] = true;
        sel[cur] = true;
        if cur < top + 2 {
            continue;
        }
        let qr = &q[h * hd..][..hd];
        let mut scores: Vec<(f32, usize)> = (1..cur)
            .map(|pg| {
                let mut s = 0f32;
                for (d, qd) in qr.iter().enumerate() {
                    let (mut lo, mut hi) = (f32::MAX, f32::MIN);
                    for p in pg * page..(pg + 1) * page {
                        let x = k[p * nkv * hd + kvh * hd + d];
                        lo = lo.min(x);
                        hi = hi.max(x);
                    }
                    s += (qd * lo).max(qd * hi);
                }
                (s, pg)
            })
            .collect();
        scores.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, pg) in scores.iter().take(top) {
            sel[pg] = true;
        }
    }
    cpu::attention_masked(q, k, v, 1, pos, nh, nkv, hd, &|h, qp, kp| {
        kp <= qp && chosen[h][kp / page]
    })
}

/// One rope_kv append of random rows through an identity rotation, read
/// back and compared word for word with the CPU encoding of the same rows.
async fn kv_append_case(gpu: &Gpu, ty: KvDtype, hd: u32) -> Result<Check> {
    let sb = StepBuffer::new(gpu);
    let (nh, nkv) = (2u32, 2u32);
    let s = AttnShape {
        n_head: nh,
        n_kv_head: nkv,
        head_dim: hd,
        ctx: 12,
        kv: KvTypes::both(ty),
    };
    let mut rng = Rng::new(31 + hd as u64 + ty.shader_id() as u64);
    let w = s.qkv_width() as usize;
    let t = 9usize;
    let mut qkv = rng.vec(t * w, 3.0);
    // Edge rows: all zeros (scale 0), and one with ties in magnitude.
    let k0 = (nh * hd) as usize;
    qkv[k0..k0 + hd as usize].fill(0.0);
    // (The tie row only where rows are stored as they are: turned by H it
    // becomes a row of exact rounding ties, where a GPU may legitimately
    // fuse a multiply-add and land one code away: SwiftShader does.)
    if !s.kv.rot_k(hd) {
        for (i, x) in qkv[w + k0..w + k0 + hd as usize].iter_mut().enumerate() {
            *x = if i % 3 == 0 { -1.5 } else { 1.5 };
        }
    }
    let table = vec![[1f32, 0f32]; s.ctx as usize * hd as usize / 2];
    let tt = gpu.upload("rope", &table.iter().flat_map(|c| *c).collect::<Vec<f32>>())?;
    let qkv_t = gpu.upload("qkv", &qkv)?;
    let cache = KvCache::new(gpu, 1, s, KvPolicy::Full)?;
    let (kc, vc) = (&cache.k[0], &cache.v[0]);
    let d = ops::rope_kv(gpu, &sb, &s, &tt, &qkv_t, cache.bind(0), t as u32)?;
    let pos0 = 2u32;
    run(gpu, &sb, &step(t as u32, pos0), &[d])?;
    let rw = ty.row_words(hd) as usize;
    let mut bad = 0usize;
    let mut first = None;
    for (which, buf, off) in [("k", kc, nh), ("v", vc, nh + nkv)] {
        // KIVI2 keys have their own layout (kivi_append_case).
        if which == "k" && ty == KvDtype::KIVI2 {
            continue;
        }
        let got: Vec<u32> = read(gpu, buf).await?;
        for ti in 0..t {
            for h in 0..nkv as usize {
                let src = ti * w + (off as usize + h) * hd as usize;
                let x = &qkv[src..src + hd as usize];
                // Block types store rows turned by H (engine/src/kv).
                let want = if s.kv.rot_k(hd) {
                    ty.encode_row(&kv::hadamard(x))?
                } else {
                    ty.encode_row(x)?
                };
                let row = h * s.ctx as usize + pos0 as usize + ti;
                let g = &got[row * rw..(row + 1) * rw];
                let n = g.iter().zip(&want).filter(|(a, b)| a != b).count();
                if n > 0 && first.is_none() {
                    first = Some(format!(
                        "{which} token {ti} head {h}: {n} of {rw} words differ"
                    ));
                }
                bad += n;
            }
        }
    }
    Ok(match first {
        None => Check {
            max_abs: 0.0,
            max_rel: 0.0,
            fail: None,
        },
        Some(f) => mismatch(format!("{f} ({bad} words in all)")),
    })
}

async fn sample_once(
    gpu: &Gpu,
    logits: &[f32],
    history: &[u32],
    p: SampleParams,
    greedy: bool,
    u: f32,
) -> Result<u32> {
    sample_masked(gpu, logits, history, p, greedy, u, None).await
}

async fn sample_masked(
    gpu: &Gpu,
    logits: &[f32],
    history: &[u32],
    p: SampleParams,
    greedy: bool,
    u: f32,
    mask: Option<&[u32]>,
) -> Result<u32> {
    let sb = StepBuffer::new(gpu);
    let lt = gpu.upload("logits", logits)?;
    let ht = gpu.upload(
        "history",
        &if history.is_empty() {
            vec![0u32]
        } else {
            history.to_vec()
        },
    )?;
    let out = gpu.zeros("out", 4)?;
    let words = logits.len().div_ceil(32);
    let mt = gpu.upload("mask", mask.unwrap_or(&vec![0u32; words]))?;
    let up = SampleUniform {
        vocab: logits.len() as u32,
        greedy: greedy as u32,
        top_k: p.top_k,
        logits_off: 0,
        temperature: p.temperature,
        top_p: p.top_p,
        min_p: p.min_p,
        rep_penalty: p.rep_penalty,
    };
    let st = Step {
        n_tokens: 1,
        rand_u: u,
        n_history: history.len() as u32,
        masked: mask.is_some() as u32,
        ..Default::default()
    };
    gpu.run(
        &sb,
        &st,
        &[ops::sample(gpu, &sb, &up, &lt, &ht, &out, &mt)?],
    )?;
    Ok(read::<u32>(gpu, &out).await?[0])
}

fn mismatch(what: String) -> Check {
    Check {
        max_abs: 1.0,
        max_rel: 1.0,
        fail: Some(what),
    }
}

async fn sampler_greedy_case(gpu: &Gpu) -> Result<Check> {
    let mut rng = Rng::new(8);
    let mut logits = rng.vec(1003, 3.0);
    logits[17] = 50.0;
    logits[901] = 50.0; // a tie: the lower id wins
    let p = SampleParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        rep_penalty: 1.0,
    };
    let a = sample_once(gpu, &logits, &[], p, true, 0.5).await?;
    // A penalty on 17 (listed twice, applied once) leaves 901.
    let b = sample_once(
        gpu,
        &logits,
        &[17, 17],
        SampleParams {
            rep_penalty: 1.5,
            ..p
        },
        true,
        0.5,
    )
    .await?;
    let mut pen = logits.clone();
    cpu::apply_rep_penalty(&mut pen, &[17, 17], 1.5);
    Ok(match (a, b) {
        (17, b) if b as usize == cpu::argmax(&pen) => Check {
            max_abs: 0.0,
            max_rel: 0.0,
            fail: None,
        },
        (a, b) => mismatch(format!(
            "argmax {a} (expected 17), with penalty {b} (expected {})",
            cpu::argmax(&pen)
        )),
    })
}

/// For a grid of random numbers u, the draw is the token whose slice of the
/// exact (sorted) reference distribution contains u; u within 1e-3 of a slice
/// boundary is skipped, where f32 summation order may decide.
/// A grammar's mask: greedy takes the best allowed id, and sampling draws
/// from the distribution of the allowed ids alone (the CPU reference on
/// logits with the others pushed to the bottom).
async fn sampler_mask_case(gpu: &Gpu) -> Result<Check> {
    let mut rng = Rng::new(10);
    let mut logits = rng.vec(517, 2.0);
    logits[3] = 40.0; // the best id, masked out below
    let mut mask = vec![0u32; logits.len().div_ceil(32)];
    for i in 0..logits.len() {
        if i != 3 && rng.uniform() < 0.3 {
            mask[i / 32] |= 1 << (i % 32);
        }
    }
    let on = |i: usize| (mask[i / 32] >> (i % 32)) & 1 == 1;
    let masked: Vec<f32> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| if on(i) { x } else { -3.0e38 })
        .collect();
    let greedy = SampleParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        rep_penalty: 1.0,
    };
    let got = sample_masked(gpu, &logits, &[], greedy, true, 0.5, Some(&mask)).await?;
    if got as usize != cpu::argmax(&masked) {
        return Ok(mismatch(format!(
            "greedy under a mask: got {got}, want {}",
            cpu::argmax(&masked)
        )));
    }
    let p = SampleParams {
        temperature: 0.9,
        top_k: 0,
        top_p: 0.95,
        min_p: 0.0,
        rep_penalty: 1.0,
    };
    let dist = cpu::sample_distribution(&masked, &p);
    for i in 0..16 {
        let u = (i as f32 + 0.5) / 16.0;
        let Some(want) = inverse_cdf(&dist, u) else {
            continue;
        };
        let got = sample_masked(gpu, &logits, &[], p, false, u, Some(&mask)).await?;
        if Some(got) != want || !on(got as usize) {
            return Ok(mismatch(format!(
                "sampling under a mask at u {u}: got {got}, want {want:?}"
            )));
        }
    }
    Ok(Check {
        max_abs: 0.0,
        max_rel: 0.0,
        fail: None,
    })
}

/// The id an inverse-CDF draw at `u` picks from `dist` (None while u lies
/// within 1e-3 of a boundary, where f32 rounding may pick a neighbour; the
/// inner Option is None past the last id).
fn inverse_cdf(dist: &[(u32, f64)], u: f32) -> Option<Option<u32>> {
    let (mut run, mut want, mut near) = (0.0f64, None, false);
    for (id, pr) in dist {
        near |= (u as f64 - run).abs() < 1e-3 || (u as f64 - run - pr).abs() < 1e-3;
        if want.is_none() && (u as f64) < run + pr {
            want = Some(*id);
        }
        run += pr;
    }
    (!near).then_some(want)
}

async fn sampler_distribution_case(gpu: &Gpu) -> Result<Check> {
    let mut rng = Rng::new(9);
    let logits = rng.vec(517, 2.0);
    for p in [
        SampleParams {
            temperature: 0.8,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            rep_penalty: 1.0,
        },
        SampleParams {
            temperature: 1.0,
            top_k: 9,
            top_p: 1.0,
            min_p: 0.0,
            rep_penalty: 1.0,
        },
        SampleParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            rep_penalty: 1.0,
        },
        SampleParams {
            temperature: 1.3,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.1,
            rep_penalty: 1.0,
        },
    ] {
        let dist = cpu::sample_distribution(&logits, &p);
        let mut checked = 0;
        for i in 0..24 {
            let u = (i as f32 + 0.5) / 24.0;
            let Some(want) = inverse_cdf(&dist, u) else {
                continue;
            };
            let got = sample_once(gpu, &logits, &[], p, false, u).await?;
            if Some(got) != want {
                return Ok(mismatch(format!(
                    "{p:?} u={u}: drew {got}, expected {want:?}"
                )));
            }
            checked += 1;
        }
        if checked < 12 {
            return Ok(mismatch(format!(
                "{p:?}: only {checked} draws away from slice boundaries"
            )));
        }
    }
    Ok(Check {
        max_abs: 0.0,
        max_rel: 0.0,
        fail: None,
    })
}
