//! all-MiniLM-L6-v2 on our kernels against the golden HF transformers
//! embeddings (../shared/golden/minilm-l6-v2.json): token ids exactly, every
//! value within 1e-4 and cosine at least 0.99999, on every tier; and the
//! golden retrieval table.

mod common;
use common::{ids, minilm_dir, minilm_golden};
use lottery::engine::{Gpu, GpuOptions, Tier};
use lottery::models::arch::bert::BertEncoder;
use std::sync::Arc;

fn encoder(opts: &GpuOptions) -> BertEncoder {
    let gpu = Arc::new(Gpu::new(opts).unwrap_or_else(|e| panic!("{e}")));
    BertEncoder::load(gpu, &minilm_dir(), None, &mut |_, _| {}).unwrap_or_else(|e| panic!("{e}"))
}

/// The message of loading `dir`, which must fail.
fn load_error(gpu: &Arc<Gpu>, dir: &std::path::Path) -> String {
    match BertEncoder::load(gpu.clone(), dir, None, &mut |_, _| {}) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// All golden sentences in one call (so they share padded batches), then each
/// alone: both must match the single-sentence reference.
fn check_golden(enc: &BertEncoder, what: &str) {
    let g = minilm_golden();
    let sentences = g["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    for s in sentences {
        let (got, truncated) = enc.tokenize(s["text"].as_str().unwrap()).unwrap();
        assert_eq!(
            got,
            ids(&s["input_ids"]),
            "{what}: token ids of {}",
            s["name"]
        );
        assert_eq!(
            truncated,
            s["truncated"].as_bool().unwrap(),
            "{}",
            s["name"]
        );
    }
    let batched = enc.embed(&texts).unwrap();
    let single: Vec<_> = texts
        .iter()
        .map(|t| enc.embed(&[t]).unwrap().remove(0))
        .collect();
    for (s, (b, one)) in sentences.iter().zip(batched.iter().zip(&single)) {
        let want = floats(&s["embedding"]);
        for (mode, e) in [("batched", b), ("alone", one)] {
            assert_eq!(e.tokens, s["n_tokens"].as_u64().unwrap() as usize);
            let (mut worst, mut at) = (0f32, 0);
            for (i, (x, y)) in e.vector.iter().zip(&want).enumerate() {
                if (x - y).abs() > worst {
                    (worst, at) = ((x - y).abs(), i);
                }
            }
            let cos = cosine(&e.vector, &want);
            assert!(
                worst <= 1e-4 && cos >= 0.99999,
                "{what} {mode}: {}: max |err| {worst:.2e} at {at} (got {}, want {}), cosine {cos:.7}",
                s["name"],
                e.vector[at],
                want[at]
            );
        }
    }
}

#[test]
fn golden_embeddings_on_every_tier() {
    let features = Gpu::new(&GpuOptions::default()).unwrap().device.features();
    for tier in Tier::supported(features) {
        let enc = encoder(&GpuOptions {
            tier: Some(tier),
            ..Default::default()
        });
        check_golden(&enc, &format!("tier {tier:?} on {}", enc.gpu.adapter.name));
        eprintln!("tier {tier:?}: golden embeddings match");
    }
}

#[test]
fn golden_retrieval_table() {
    let g = minilm_golden();
    let enc = encoder(&GpuOptions::default());
    let text = |name: &str| -> String {
        g["sentences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let r = &g["retrieval"];
    let names = |k: &str| -> Vec<String> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|v| text(v.as_str().unwrap()))
            .collect()
    };
    let (q, p) = (names("queries"), names("passages"));
    let qe = enc
        .embed(&q.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .unwrap();
    let pe = enc
        .embed(&p.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .unwrap();
    let want = r["cosine"].as_array().unwrap();
    for (i, qv) in qe.iter().enumerate() {
        let row: Vec<f64> = pe.iter().map(|pv| cosine(&qv.vector, &pv.vector)).collect();
        let best = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        assert_eq!(
            best as u64,
            r["expected"][i].as_u64().unwrap(),
            "query {i}: {row:?}"
        );
        for (j, c) in row.iter().enumerate() {
            let w = want[i][j].as_f64().unwrap();
            assert!((c - w).abs() < 1e-4, "cosine[{i}][{j}] = {c}, golden {w}");
        }
    }
}

#[test]
fn empty_text_and_bad_directories_are_clear_errors() {
    let enc = encoder(&GpuOptions::default());
    let e = enc.embed(&["fine", "  \n"]).unwrap_err().to_string();
    assert!(e.contains("input 1") && e.contains("empty"), "{e}");
    let gpu = enc.gpu.clone();
    let tmp = std::env::temp_dir().join(format!("lottery-bert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let e = load_error(&gpu, &tmp);
    assert!(e.contains("not a model directory"), "{e}");
    std::fs::create_dir_all(&tmp).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "sentence_bert_config.json",
        "modules.json",
    ] {
        std::fs::copy(minilm_dir().join(f), tmp.join(f)).unwrap();
    }
    let e = load_error(&gpu, &tmp);
    assert!(e.contains("model.safetensors"), "{e}");
    // A truncated weights file: the header promises more bytes than exist.
    let full = std::fs::read(minilm_dir().join("model.safetensors")).unwrap();
    std::fs::write(tmp.join("model.safetensors"), &full[..full.len() / 2]).unwrap();
    let e = load_error(&gpu, &tmp);
    assert!(e.contains("model.safetensors"), "{e}");
    // Math we do not implement is refused with the key.
    let cfg = std::fs::read_to_string(minilm_dir().join("config.json")).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        cfg.replace("\"gelu\"", "\"gelu_new\""),
    )
    .unwrap();
    std::fs::write(tmp.join("model.safetensors"), &full).unwrap();
    let e = load_error(&gpu, &tmp);
    assert!(e.contains("hidden_act"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Quantized encoders (`--quantize` at load): the error budget of each
/// format against the golden f32 embeddings, as the worst cosine over the
/// golden sentences. The budgets are written down in BENCHMARKS.md.
#[test]
fn quantized_encoders_stay_within_their_budget() {
    use lottery::engine::WeightFormat;
    let g = minilm_golden();
    let sentences = g["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());
    for (fmt, min_cos) in [
        (WeightFormat::F16, 0.99999),
        (WeightFormat::Q8_0, 0.9995),
        (WeightFormat::Q4_0, 0.95),
    ] {
        let enc = BertEncoder::load(gpu.clone(), &minilm_dir(), Some(fmt), &mut |_, _| {})
            .unwrap_or_else(|e| panic!("{e}"));
        let out = enc.embed(&texts).unwrap();
        let worst = sentences
            .iter()
            .zip(&out)
            .map(|(s, e)| cosine(&e.vector, &floats(&s["embedding"])))
            .fold(1.0f64, f64::min);
        eprintln!("{}: worst cosine to the f32 golden {worst:.6}", fmt.name());
        assert!(
            worst >= min_cos,
            "{}: worst cosine {worst} < {min_cos}",
            fmt.name()
        );
        // Retrieval survives the compression: each query still finds its passage.
        let r = &g["retrieval"];
        let vec_of = |name: &serde_json::Value| {
            let i = sentences.iter().position(|s| &s["name"] == name).unwrap();
            out[i].vector.clone()
        };
        let passages: Vec<Vec<f32>> = r["passages"]
            .as_array()
            .unwrap()
            .iter()
            .map(vec_of)
            .collect();
        for (qi, q) in r["queries"].as_array().unwrap().iter().enumerate() {
            let qv = vec_of(q);
            let row: Vec<f64> = passages.iter().map(|p| cosine(&qv, p)).collect();
            let best = (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            assert_eq!(
                best as u64,
                r["expected"][qi].as_u64().unwrap(),
                "{}: query {qi}: {row:?}",
                fmt.name()
            );
        }
    }
}
