//! The activation-aware quantizer: calibrating on text through the GPU and
//! scaling channels must bring a Q4_0 model closer to its source than plain
//! Q4_0, measured as the mean KL divergence of teacher-forced next-token
//! distributions on held-out prompts.

mod common;
use lottery::engine::{Gpu, GpuOptions, WeightFormat};
use lottery::models::load::GgufFile;
use lottery::models::quantize::{quantize_gguf, quantize_gguf_awq, QuantizeOptions};
use lottery::models::{Model, Session, SessionOptions};
use std::sync::Arc;

fn logits(model: &Arc<Model>, ids: &[u32]) -> Vec<f32> {
    let mut s = Session::new(
        model.clone(),
        SessionOptions {
            ctx: 256,
            max_batch: 64,
            logit_rows: 64,
            ..Default::default()
        },
    )
    .unwrap();
    s.logits(ids).unwrap()
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)) as f64;
    let lse = m + row.iter().map(|v| (*v as f64 - m).exp()).sum::<f64>().ln();
    row.iter().map(|v| *v as f64 - lse).collect()
}

fn mean_kl(p: &[f32], q: &[f32], vocab: usize) -> f64 {
    let rows = p.len() / vocab;
    let mut kl = 0.0;
    for r in 0..rows {
        let (lp, lq) = (
            log_softmax(&p[r * vocab..][..vocab]),
            log_softmax(&q[r * vocab..][..vocab]),
        );
        kl += lp
            .iter()
            .zip(&lq)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
    }
    kl / rows as f64
}

#[test]
fn activation_aware_q4_0_is_closer_to_the_source_than_plain_q4_0() {
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());
    let path = common::model_path();
    let src_model = Arc::new(Model::load(gpu.clone(), &path, &mut |_, _| {}).unwrap());
    let text = std::fs::read_to_string(common::golden_dir().join("ppl_text.txt")).unwrap();
    let calib: Vec<u32> = src_model
        .tokenizer
        .encode(&text)
        .unwrap()
        .into_iter()
        .take(256)
        .collect();
    let stats = Session::new(
        src_model.clone(),
        SessionOptions {
            ctx: 256,
            max_batch: 128,
            ..Default::default()
        },
    )
    .unwrap()
    .calibrate(&calib)
    .unwrap();
    assert_eq!(stats.len(), 4 * src_model.config.n_layer);
    assert!(stats
        .iter()
        .all(|(_, v)| v.iter().all(|x| x.is_finite() && *x >= 0.0) && v.iter().any(|x| *x > 0.0)));
    let src = GgufFile::open(&path).unwrap();
    let opts = QuantizeOptions {
        target: WeightFormat::Q4_0,
        overrides: vec![("token_embd".into(), WeightFormat::Q8_0)],
    };
    let dir = std::env::temp_dir().join(format!("lottery-awq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (plain, _) = quantize_gguf(&src, &opts).unwrap();
    let (awq, _, alphas) = quantize_gguf_awq(&src, &opts, &stats.into_iter().collect()).unwrap();
    assert!(
        alphas.iter().flatten().any(|a| *a > 0.0),
        "the search never chose activation scaling"
    );
    let (pp, pa) = (dir.join("plain.gguf"), dir.join("awq.gguf"));
    plain.write_file(&pp).unwrap();
    awq.write_file(&pa).unwrap();
    let plain = Arc::new(Model::load(gpu.clone(), &pp, &mut |_, _| {}).unwrap());
    let awq = Arc::new(Model::load(gpu, &pa, &mut |_, _| {}).unwrap());
    // Held-out: golden prompts that are not the calibration text.
    let g = common::golden();
    let vocab = src_model.config.vocab;
    let (mut kl_plain, mut kl_awq) = (0.0, 0.0);
    for p in g["prompts"].as_array().unwrap().iter().filter(|p| {
        ["plain_story", "code_python", "chat_boiling"].contains(&p["name"].as_str().unwrap())
    }) {
        let ids = common::ids(&p["input_ids"]);
        let want = logits(&src_model, &ids);
        kl_plain += mean_kl(&want, &logits(&plain, &ids), vocab);
        kl_awq += mean_kl(&want, &logits(&awq, &ids), vocab);
    }
    eprintln!("mean KL vs source: plain q4_0 {kl_plain:.4}, activation-aware q4_0 {kl_awq:.4}");
    assert!(
        kl_awq < kl_plain,
        "activation-aware KL {kl_awq} is not below plain {kl_plain}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// GPTQ through the whole path on the tiny model: Hessians gathered on the
/// GPU by the calibration graph, each projection quantized with error
/// feedback; the result is closer to the f32 model than plain q4_0 on the
/// calibration tokens, and every projection is still q4_0.
#[test]
fn gptq_q4_0_is_closer_to_the_source_than_plain_q4_0() {
    use lottery::models::quantize::quantize_gguf_gptq;
    let dir = std::env::temp_dir().join(format!("lottery-gptq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src_path = dir.join("tiny.gguf");
    common::tiny_gguf("llama", WeightFormat::F32, &|_| true)
        .write_file(&src_path)
        .unwrap();
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());
    let src_model = Arc::new(Model::load(gpu.clone(), &src_path, &mut |_, _| {}).unwrap());
    let ids: Vec<u32> = (0..60u32)
        .map(|i| (i * 7 + 3) % common::VOCAB as u32)
        .collect();
    let stats = Session::new(
        src_model.clone(),
        SessionOptions {
            ctx: 64,
            max_batch: 16,
            ..Default::default()
        },
    )
    .unwrap()
    .calibrate_inputs(&ids, true)
    .unwrap();
    let g0 = stats[0].1.gram.as_ref().unwrap();
    let d = src_model.config.d_model;
    assert_eq!(g0.len(), d * d);
    // Symmetric, with the mean squares on its diagonal.
    for i in 0..d {
        assert!((g0[i * d + i] - stats[0].1.mean_sq[i]).abs() <= 1e-4 * (1.0 + g0[i * d + i]));
        assert!((g0[i * d + (d - 1 - i)] - g0[(d - 1 - i) * d + i]).abs() < 1e-4);
    }
    let src = GgufFile::open(&src_path).unwrap();
    let opts = QuantizeOptions {
        target: WeightFormat::Q4_0,
        overrides: vec![],
    };
    let (plain, _) = quantize_gguf(&src, &opts).unwrap();
    let mut calls = 0;
    let (gptq, _) = quantize_gguf_gptq(
        &src,
        &opts,
        &stats.into_iter().collect(),
        false,
        &mut |_, _| calls += 1,
    )
    .unwrap();
    assert_eq!(calls, common::LAYERS * 7);
    let (pp, pg) = (dir.join("plain.gguf"), dir.join("gptq.gguf"));
    plain.write_file(&pp).unwrap();
    gptq.write_file(&pg).unwrap();
    let back = GgufFile::open(&pg).unwrap();
    assert!(back
        .tensors()
        .iter()
        .filter(|t| t.name.starts_with("blk.") && t.dims.len() == 2)
        .all(|t| t.ggml_type == lottery::models::load::GgmlType::Q4_0));
    let plain = Arc::new(Model::load(gpu.clone(), &pp, &mut |_, _| {}).unwrap());
    let gptq = Arc::new(Model::load(gpu, &pg, &mut |_, _| {}).unwrap());
    let want = logits(&src_model, &ids[..48]);
    let vocab = common::VOCAB;
    let (kl_plain, kl_gptq) = (
        mean_kl(&want, &logits(&plain, &ids[..48]), vocab),
        mean_kl(&want, &logits(&gptq, &ids[..48]), vocab),
    );
    eprintln!("tiny model, mean KL vs f32: plain q4_0 {kl_plain:.5}, gptq q4_0 {kl_gptq:.5}");
    assert!(
        kl_gptq < kl_plain,
        "gptq KL {kl_gptq} is not below plain {kl_plain}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
