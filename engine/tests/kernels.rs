//! Every kernel against its CPU reference (f64 accumulation) on seeded random
//! inputs, with shapes that have odd tails.

mod common;
use common::{assert_close, gpu};
use lottery_engine::formats::{self, GpuWeight};
use lottery_engine::gpu::{MatvecVariant, Step, StepBuffer};
use lottery_engine::ops::{self, AttnShape, MatvecOpts, SampleUniform};
use lottery_engine::reference::{self as cpu, Rng, SampleParams};
use lottery_engine::{Gpu, GpuOptions, WeightFormat};

fn step(n_tokens: u32, pos0: u32) -> Step {
    Step {
        n_tokens,
        pos0,
        kv_len: pos0 + n_tokens,
        chunk_len: pos0 + n_tokens,
        n_chunks: 1,
        ..Default::default()
    }
}

/// Random weights in `fmt` plus their exact dequantized values.
fn weight(
    gpu: &Gpu,
    rng: &mut Rng,
    fmt: WeightFormat,
    n: usize,
    k: usize,
) -> (GpuWeight, Vec<f32>) {
    let x = rng.vec(n * k, 0.5);
    let q = formats::quantize(fmt, &x).unwrap();
    let mut deq = vec![0f32; n * k];
    formats::dequantize(fmt, &q, &mut deq).unwrap();
    (
        GpuWeight::upload(gpu, &format!("w.{}", fmt.name()), fmt, &q, n, k).unwrap(),
        deq,
    )
}

fn k_for(fmt: WeightFormat) -> usize {
    // An odd number of blocks (dense formats: an odd number of 8-wide units).
    if fmt.block_size() == 1 {
        8 * 13
    } else {
        32 * 5
    }
}

#[test]
fn matvec_all_formats_both_variants() {
    let mut gpu = gpu();
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(1);
    for (variant, fmt) in [MatvecVariant::Lanes, MatvecVariant::Rows]
        .into_iter()
        .flat_map(|v| WeightFormat::ALL.map(|f| (v, f)))
    {
        gpu.matvec = variant;
        for n in [1usize, 37, 203] {
            let k = k_for(fmt);
            let (w, deq) = weight(&gpu, &mut rng, fmt, n, k);
            let x = rng.vec(k, 1.0);
            let y0 = rng.vec(n, 1.0);
            let xt = gpu.upload("x", &x).unwrap();
            for accumulate in [false, true] {
                let yt = gpu.upload("y", &y0).unwrap();
                let d = ops::matvec(
                    &gpu,
                    &sb,
                    &w,
                    &xt,
                    &yt,
                    MatvecOpts {
                        accumulate,
                        ..Default::default()
                    },
                )
                .unwrap();
                gpu.run(&sb, &step(1, 0), &d).unwrap();
                let mut want = cpu::matmul(&x, &deq, 1, n, k);
                if accumulate {
                    want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
                }
                let got: Vec<f32> = gpu.read(&yt).unwrap();
                assert_close(
                    &format!("matvec {} n={n} k={k} acc={accumulate}", fmt.name()),
                    &got[..n],
                    &want,
                    1e-4,
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn matvec_last_row_reads_the_last_token() {
    let gpu = gpu();
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(2);
    let (n, k, t) = (19, 64, 5);
    let (w, deq) = weight(&gpu, &mut rng, WeightFormat::Q8_0, n, k);
    let x = rng.vec(t * k, 1.0);
    let xt = gpu.upload("x", &x).unwrap();
    let yt = gpu.zeros("y", n as u64 * 4).unwrap();
    let d = ops::matvec(
        &gpu,
        &sb,
        &w,
        &xt,
        &yt,
        MatvecOpts {
            last_row: true,
            x_stride: k as u32,
            ..Default::default()
        },
    )
    .unwrap();
    gpu.run(&sb, &step(t as u32, 0), &d).unwrap();
    let want = cpu::matmul(&x[(t - 1) * k..], &deq, 1, n, k);
    assert_close(
        "matvec last_row",
        &gpu.read::<f32>(&yt).unwrap()[..n],
        &want,
        1e-4,
        1e-4,
    );
}

#[test]
fn matmul_all_formats_both_variants() {
    let mut gpu = gpu();
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(3);
    for (variant, fmt) in [MatvecVariant::Lanes, MatvecVariant::Rows]
        .into_iter()
        .flat_map(|v| WeightFormat::ALL.map(|f| (v, f)))
    {
        gpu.matvec = variant;
        for (n, t) in [(37usize, 1usize), (70, 13), (5, 9)] {
            let k = k_for(fmt);
            let (w, deq) = weight(&gpu, &mut rng, fmt, n, k);
            let x = rng.vec(t * k, 1.0);
            let y0 = rng.vec(t * n, 1.0);
            let xt = gpu.upload("x", &x).unwrap();
            for accumulate in [false, true] {
                let yt = gpu.upload("y", &y0).unwrap();
                let d = ops::matmul(&gpu, &sb, &w, &xt, &yt, accumulate, t as u32).unwrap();
                gpu.run(&sb, &step(t as u32, 0), &d).unwrap();
                let mut want = cpu::matmul(&x, &deq, t, n, k);
                if accumulate {
                    want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
                }
                let got: Vec<f32> = gpu.read(&yt).unwrap();
                assert_close(
                    &format!(
                        "matmul {variant:?} {} n={n} k={k} t={t} acc={accumulate}",
                        fmt.name()
                    ),
                    &got,
                    &want,
                    1e-4,
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn embed_all_formats() {
    let gpu = gpu();
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(4);
    for fmt in WeightFormat::ALL {
        let (vocab, d) = (29usize, if fmt.block_size() == 1 { 88 } else { 96 });
        let (w, deq) = weight(&gpu, &mut rng, fmt, vocab, d);
        let toks: Vec<u32> = (0..7)
            .map(|_| (rng.next_u64() % vocab as u64) as u32)
            .collect();
        let tt = gpu.upload("tokens", &toks).unwrap();
        let out = gpu.zeros("out", (toks.len() * d * 4) as u64).unwrap();
        let disp = ops::embed(&gpu, &sb, &w, &tt, &out, toks.len() as u32).unwrap();
        gpu.run(&sb, &step(toks.len() as u32, 0), &disp).unwrap();
        let want: Vec<f32> = toks
            .iter()
            .flat_map(|t| deq[*t as usize * d..][..d].to_vec())
            .collect();
        assert_close(
            &format!("embed {}", fmt.name()),
            &gpu.read::<f32>(&out).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn rmsnorm_matches() {
    let gpu = gpu();
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(5);
    for (d, t) in [(83usize, 3usize), (576, 2), (1000, 1)] {
        let x = rng.vec(t * d, 2.0);
        let g = rng.vec(d, 1.0);
        let (xt, gt) = (gpu.upload("x", &x).unwrap(), gpu.upload("g", &g).unwrap());
        let yt = gpu.zeros("y", (t * d * 4) as u64).unwrap();
        let disp = ops::rmsnorm(&gpu, &sb, &gt, &xt, &yt, d as u32, 1e-5, t as u32).unwrap();
        gpu.run(&sb, &step(t as u32, 0), &[disp]).unwrap();
        assert_close(
            &format!("rmsnorm d={d}"),
            &gpu.read::<f32>(&yt).unwrap(),
            &cpu::rmsnorm(&x, &g, d, 1e-5),
            1e-5,
            1e-4,
        );
    }
}

#[test]
fn swiglu_matches() {
    let gpu = gpu();
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(6);
    let (ff, t) = (77usize, 3usize);
    let gu = rng.vec(t * 2 * ff, 3.0);
    let gt = gpu.upload("gu", &gu).unwrap();
    let h = gpu.zeros("h", (t * ff * 4) as u64).unwrap();
    let disp = ops::swiglu(&gpu, &sb, &gt, &h, ff as u32, t as u32).unwrap();
    gpu.run(&sb, &step(t as u32, 0), &[disp]).unwrap();
    let (mut g, mut u) = (vec![], vec![]);
    for r in gu.chunks_exact(2 * ff) {
        g.extend_from_slice(&r[..ff]);
        u.extend_from_slice(&r[ff..]);
    }
    assert_close(
        "swiglu",
        &gpu.read::<f32>(&h).unwrap(),
        &cpu::swiglu(&g, &u),
        1e-5,
        1e-4,
    );
}

/// Rope + cache append + attention (one chunk and split into chunks) for a
/// prefill followed by decode steps, against the CPU reference.
#[test]
fn rope_cache_attention_prefill_and_decode() {
    let gpu = gpu();
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(7);
    for kv_f16 in [false, true] {
        let s = AttnShape {
            n_head: 6,
            n_kv_head: 2,
            head_dim: 38,
            ctx: 90,
            kv_f16,
        };
        let (nh, nkv, hd) = (6usize, 2usize, 38usize);
        let w = s.qkv_width() as usize;
        let table = cpu::rope_table(s.ctx as usize, hd, 10000.0);
        let tt = gpu
            .upload("rope", &table.iter().flat_map(|c| *c).collect::<Vec<f32>>())
            .unwrap();
        let kc = gpu.zeros("kc", s.cache_bytes()).unwrap();
        let vc = gpu.zeros("vc", s.cache_bytes()).unwrap();
        let max_t = 71u32;
        let qkv_t = gpu.zeros("qkv", max_t as u64 * w as u64 * 4).unwrap();
        let max_chunks = 8u64;
        let part = gpu
            .zeros(
                "part",
                ops::attention_part_bytes(&s, max_t as u64 * max_chunks),
            )
            .unwrap();
        let out = gpu
            .zeros("out", max_t as u64 * (nh * hd) as u64 * 4)
            .unwrap();
        let disp = vec![
            ops::rope_kv(&gpu, &sb, &s, &tt, &qkv_t, &kc, &vc, max_t).unwrap(),
            ops::attention(&gpu, &sb, &s, &qkv_t, &kc, &vc, &part).unwrap(),
            ops::attention_combine(&gpu, &sb, &s, &part, &out).unwrap(),
        ];
        let (mut all_k, mut all_v) = (Vec::new(), Vec::new());
        let mut pos = 0usize;
        // A 71-token prefill in one chunk, then decode steps split in chunks of 16.
        for (t, chunk) in [(71usize, 0u32), (1, 16), (1, 16), (1, 7)] {
            let qkv = rng.vec(t * w, 1.0);
            gpu.queue
                .write_buffer(&qkv_t.buffer, 0, bytemuck::cast_slice(&qkv));
            let kv_len = (pos + t) as u32;
            let chunk_len = if chunk == 0 { kv_len } else { chunk };
            let st = Step {
                n_tokens: t as u32,
                pos0: pos as u32,
                kv_len,
                chunk_len,
                n_chunks: kv_len.div_ceil(chunk_len),
                ..Default::default()
            };
            gpu.run(&sb, &st, &disp).unwrap();
            let (mut q, mut k, mut v) = (vec![], vec![], vec![]);
            for r in qkv.chunks_exact(w) {
                q.extend_from_slice(&r[..nh * hd]);
                k.extend_from_slice(&r[nh * hd..(nh + nkv) * hd]);
                v.extend_from_slice(&r[(nh + nkv) * hd..]);
            }
            cpu::rope(&mut q, nh, hd, pos, &table);
            cpu::rope(&mut k, nkv, hd, pos, &table);
            if kv_f16 {
                // The cache rounds to f16; the reference sees the same values.
                for x in k.iter_mut().chain(v.iter_mut()) {
                    *x = half::f16::from_f32(*x).to_f32();
                }
            }
            all_k.extend_from_slice(&k);
            all_v.extend_from_slice(&v);
            let want = cpu::attention(&q, &all_k, &all_v, t, pos, nh, nkv, hd);
            let got: Vec<f32> = gpu.read(&out).unwrap();
            let tol = if kv_f16 { 2e-3 } else { 1e-4 };
            assert_close(
                &format!("attention f16={kv_f16} t={t} pos0={pos} chunk={chunk_len}"),
                &got[..t * nh * hd],
                &want,
                tol,
                tol,
            );
            // The rotated q is written back in place.
            let got_qkv: Vec<f32> = gpu.read(&qkv_t).unwrap();
            let got_q: Vec<f32> = got_qkv
                .chunks_exact(w)
                .take(t)
                .flat_map(|r| r[..nh * hd].to_vec())
                .collect();
            assert_close("rope q", &got_q, &q, 1e-5, 1e-5);
            pos += t;
        }
    }
}

fn run_sampler(
    gpu: &Gpu,
    logits: &[f32],
    history: &[u32],
    p: SampleParams,
    greedy: bool,
    u: f32,
) -> u32 {
    let sb = StepBuffer::new(gpu);
    let lt = gpu.upload("logits", logits).unwrap();
    let ht = gpu
        .upload(
            "history",
            &if history.is_empty() {
                vec![0u32]
            } else {
                history.to_vec()
            },
        )
        .unwrap();
    let out = gpu.zeros("out", 4).unwrap();
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
    let d = ops::sample(gpu, &sb, &up, &lt, &ht, &out).unwrap();
    let st = Step {
        n_tokens: 1,
        rand_u: u,
        n_history: history.len() as u32,
        ..Default::default()
    };
    gpu.run(&sb, &st, &[d]).unwrap();
    gpu.read::<u32>(&out).unwrap()[0]
}

#[test]
fn sampler_greedy_is_argmax_with_penalty() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    let mut logits = rng.vec(1003, 3.0);
    logits[17] = 50.0;
    logits[901] = 50.0; // tie: the lower id wins
    let p = SampleParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        rep_penalty: 1.0,
    };
    assert_eq!(run_sampler(&gpu, &logits, &[], p, true, 0.5), 17);
    // A penalty on 17 (listed twice: applied once) leaves 901.
    let p = SampleParams {
        rep_penalty: 1.5,
        ..p
    };
    assert_eq!(run_sampler(&gpu, &logits, &[17, 17], p, true, 0.5), 901);
    let mut pen = logits.clone();
    cpu::apply_rep_penalty(&mut pen, &[17, 17], 1.5);
    assert_eq!(cpu::argmax(&pen), 901);
}

/// For a grid of random numbers u, the GPU's draw is the token whose slice of
/// the reference CDF contains u (skipping u within 1e-3 of a boundary, where
/// f32 summation order may decide).
#[test]
fn sampler_matches_reference_distribution() {
    let gpu = gpu();
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
            let mut run = 0.0;
            let mut want = None;
            let mut near = false;
            for (id, pr) in &dist {
                if (u as f64 - run).abs() < 1e-3 || (u as f64 - run - pr).abs() < 1e-3 {
                    near = true;
                }
                if want.is_none() && (u as f64) < run + pr {
                    want = Some(*id);
                }
                run += pr;
            }
            if near {
                continue;
            }
            let got = run_sampler(&gpu, &logits, &[], p, false, u);
            assert_eq!(Some(got), want, "{p:?} u={u}");
            checked += 1;
        }
        assert!(
            checked >= 12,
            "{p:?}: only {checked} draws were away from boundaries"
        );
    }
}

/// Weights and tables larger than the device's per-binding limit are split
/// by rows into parts; results must not change.
#[test]
fn weights_split_under_a_small_binding_limit() {
    let gpu = Gpu::new(&GpuOptions {
        storage_binding_limit: Some(32 << 10),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        gpu.max_binding(),
        32 << 10,
        "the device must enforce the requested limit"
    );
    let sb = StepBuffer::new(&gpu);
    let mut rng = Rng::new(10);
    for fmt in [WeightFormat::Q8_0, WeightFormat::F32, WeightFormat::Q4_1] {
        let (n, k, t) = (700usize, k_for(fmt), 9usize);
        let (w, deq) = weight(&gpu, &mut rng, fmt, n, k);
        assert!(
            w.parts.len() > 1,
            "{}: expected a split, got one part of {} bytes",
            fmt.name(),
            w.bytes()
        );
        let x = rng.vec(t * k, 1.0);
        let xt = gpu.upload("x", &x).unwrap();
        let yt = gpu.zeros("y", (t * n * 4) as u64).unwrap();
        let d = ops::matmul(&gpu, &sb, &w, &xt, &yt, false, t as u32).unwrap();
        gpu.run(&sb, &step(t as u32, 0), &d).unwrap();
        assert_close(
            &format!("split matmul {} ({} parts)", fmt.name(), w.parts.len()),
            &gpu.read::<f32>(&yt).unwrap(),
            &cpu::matmul(&x, &deq, t, n, k),
            1e-4,
            1e-4,
        );
        let y1 = gpu.zeros("y1", (n * 4) as u64).unwrap();
        let d = ops::matvec(&gpu, &sb, &w, &xt, &y1, MatvecOpts::default()).unwrap();
        gpu.run(&sb, &step(1, 0), &d).unwrap();
        assert_close(
            &format!("split matvec {}", fmt.name()),
            &gpu.read::<f32>(&y1).unwrap(),
            &cpu::matmul(&x[..k], &deq, 1, n, k),
            1e-4,
            1e-4,
        );
        // The same rows as an embedding table, with ids in every part.
        let toks: Vec<u32> = vec![0, 699, 350, 1, 698, 123];
        let tt = gpu.upload("tokens", &toks).unwrap();
        let out = gpu.zeros("out", (toks.len() * k * 4) as u64).unwrap();
        let d = ops::embed(&gpu, &sb, &w, &tt, &out, toks.len() as u32).unwrap();
        gpu.run(&sb, &step(toks.len() as u32, 0), &d).unwrap();
        let want: Vec<f32> = toks
            .iter()
            .flat_map(|t| deq[*t as usize * k..][..k].to_vec())
            .collect();
        assert_close(
            &format!("split embed {}", fmt.name()),
            &gpu.read::<f32>(&out).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
    // A single row larger than the limit is a clear error, not a panic.
    let big = formats::quantize(WeightFormat::F32, &vec![0.0; 16 << 10]).unwrap();
    let e = GpuWeight::upload(&gpu, "huge", WeightFormat::F32, &big, 1, 16 << 10)
        .err()
        .expect("must fail");
    assert!(e.to_string().contains("huge"), "{e}");
}
