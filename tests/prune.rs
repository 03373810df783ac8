//! Pruning and sparse files: malformed sparse tensors are named errors, and
//! on a real layer of the default model SparseGPT's reconstruction beats
//! Wanda's, which beats magnitude's, and SparseGPT pruning and quantizing
//! in one pass beats rounding after it.

mod common;

use lottery::engine::formats::sparse::top_mask;
use lottery::engine::formats::{Pattern, SparseFormat, SparseTensor};
use lottery::engine::WeightFormat;
use lottery::models::arch::llama::weight_f32;
use lottery::models::load::{GgmlType, GgufFile, GgufWriter, MetaValue};
use lottery::models::prune::{
    inverse_hessian_factor, output_error, prune_gguf, sparsegpt, sparsegpt_joint, InputStats,
    LayerSparsity, PruneMethod, PruneOptions,
};
use lottery::models::{Model, Session, SessionOptions};
use lottery::{Gpu, GpuOptions};
use std::sync::Arc;

/// The tiny model pruned 2:4 with q8_0 values.
fn pruned_tiny() -> GgufFile {
    let w = common::tiny_gguf("llama", WeightFormat::F32, &|_| true);
    let src = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let opts = PruneOptions {
        method: PruneMethod::Magnitude,
        pattern: Pattern::NM { n: 2, m: 4 },
        sparsity: 0.0,
        values: WeightFormat::Q8_0,
        layer_sparsity: LayerSparsity::Uniform,
        skip: vec![],
        joint: false,
    };
    let (w, _) = prune_gguf(&src, &opts, &Default::default(), &mut |_, _| {}).unwrap();
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

/// A copy of `g` with tensor data and metadata passed through `edit`.
fn rewrite(
    g: &GgufFile,
    meta: &dyn Fn(&str, &MetaValue) -> Option<MetaValue>,
    tensor: &dyn Fn(&str, Vec<u64>, GgmlType, Vec<u8>) -> Option<(Vec<u64>, GgmlType, Vec<u8>)>,
) -> GgufFile {
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        if k == "general.alignment" {
            continue;
        }
        if let Some(v) = meta(k, v) {
            w.add_metadata(k.clone(), v).unwrap();
        }
    }
    for t in g.tensors() {
        let data = g.tensor_data(t).unwrap().to_vec();
        if let Some((dims, ty, data)) = tensor(&t.name, t.dims.clone(), t.ggml_type, data) {
            w.add_tensor(t.name.clone(), &dims, ty, data).unwrap();
        }
    }
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

fn load_error(g: &GgufFile) -> String {
    let dir = std::env::temp_dir().join(format!("lottery-bad-sparse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.gguf");
    std::fs::write(&path, g.as_bytes()).unwrap();
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| panic!("{e}")));
    match Model::load(gpu, &path, &mut |_, _| {}) {
        Ok(_) => panic!("a malformed sparse file loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_sparse_tensors_are_named_errors() {
    let g = pruned_tiny();
    let target = "blk.1.ffn_up.weight";
    let same_meta = |_: &str, v: &MetaValue| Some(v.clone());
    // A group of four keeping three: the mask breaks the 2:4 pattern.
    let bad = rewrite(&g, &same_meta, &|name, dims, ty, mut data| {
        if name == format!("{target}.sp_mask") {
            data[0] |= 0x0f;
            data[1] &= 0xf0;
            data[1] |= 0x03;
        }
        Some((dims, ty, data))
    });
    let e = load_error(&bad);
    assert!(e.contains(target) && e.contains("2:4"), "{e}");
    // Fewer values than the mask keeps (a truncated value tensor).
    let bad = rewrite(&g, &same_meta, &|name, dims, ty, data| {
        if name == format!("{target}.sp_values") {
            let n = dims[0] - 32;
            return Some((vec![n], ty, data[..data.len() - 34].to_vec()));
        }
        Some((dims, ty, data))
    });
    let e = load_error(&bad);
    assert!(e.contains(target) && e.contains("bytes of q8_0"), "{e}");
    // A companion missing.
    let bad = rewrite(&g, &same_meta, &|name, dims, ty, data| {
        (name != format!("{target}.sp_values")).then_some((dims, ty, data))
    });
    let e = load_error(&bad);
    assert!(e.contains(&format!("{target}.sp_values")), "{e}");
    // An unknown pattern.
    let bad = rewrite(
        &g,
        &|k, v| {
            Some(if k == format!("lottery.sparse.{target}") {
                MetaValue::String("5:4".into())
            } else {
                v.clone()
            })
        },
        &|_, dims, ty, data| Some((dims, ty, data)),
    );
    let e = load_error(&bad);
    assert!(e.contains(target) && e.contains("5:4"), "{e}");
    // Companions of a weight the file does not declare sparse are refused
    // as tensors the forward does not use.
    let bad = rewrite(
        &g,
        &|k, v| (k != format!("lottery.sparse.{target}")).then(|| v.clone()),
        &|_, dims, ty, data| Some((dims, ty, data)),
    );
    let e = load_error(&bad);
    assert!(e.contains(&format!("{target}.sp_mask")), "{e}");
}

/// On a real projection with real calibration inputs: the output error
/// ||(W - W') X|| at 50% is lowest for SparseGPT, then Wanda, then magnitude.
#[test]
fn sparsegpt_beats_wanda_beats_magnitude_on_a_real_layer() {
    let model = common::load_model();
    let text = "The quick brown fox jumps over the lazy dog. In 1969 the first \
        people walked on the Moon; the mission lasted eight days. Water boils at \
        100 degrees Celsius at sea level, and a kilometre is a thousand metres. \
        def add(a, b):\n    return a + b\n";
    let ids = model.tokenizer.encode(&text.repeat(3)).unwrap();
    let mut s = Session::new(
        model.clone(),
        SessionOptions {
            ctx: 256,
            max_batch: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let stats: std::collections::HashMap<String, InputStats> = s
        .calibrate_inputs(&ids, true)
        .unwrap()
        .into_iter()
        .collect();
    let g = GgufFile::open(common::model_path()).unwrap();
    for (name, input) in [
        ("blk.5.attn_q.weight", "blk.5.attn_in"),
        ("blk.12.ffn_down.weight", "blk.12.down_in"),
    ] {
        let st = &stats[input];
        let w = weight_f32(&g, name).unwrap();
        let k = st.mean_sq.len();
        let n = w.len() / k;
        let gram = st.gram.as_ref().unwrap();
        let apply = |keep: &[bool]| -> Vec<f32> {
            w.iter()
                .zip(keep)
                .map(|(v, k)| if *k { *v } else { 0.0 })
                .collect()
        };
        let mag: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        let wanda: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, v)| v.abs() * st.mean_sq[i % k].sqrt())
            .collect();
        let e_mag = output_error(
            &w,
            &apply(&top_mask(&mag, n, k, Pattern::Unstructured, 0.5)),
            n,
            k,
            Some(st),
        );
        let e_wanda = output_error(
            &w,
            &apply(&top_mask(&wanda, n, k, Pattern::Unstructured, 0.5)),
            n,
            k,
            Some(st),
        );
        let (sg, _) = sparsegpt(&w, n, k, gram, Pattern::Unstructured, 0.5).unwrap();
        let e_sgpt = output_error(&w, &sg, n, k, Some(st));
        eprintln!("{name}: relative output error magnitude {e_mag:.4}, wanda {e_wanda:.4}, sparsegpt {e_sgpt:.4}");
        assert!(
            e_sgpt < e_wanda && e_wanda < e_mag,
            "{name}: {e_sgpt} {e_wanda} {e_mag}"
        );
        // 2:4 with q4_0 values: rounding inside the walk against after it.
        let pattern = Pattern::NM { n: 2, m: 4 };
        let format = SparseFormat::new(pattern, WeightFormat::Q4_0).unwrap();
        let (pw, keep) = sparsegpt(&w, n, k, gram, pattern, 0.0).unwrap();
        let after = SparseTensor::from_dense(format, n, k, &pw, &keep)
            .unwrap()
            .to_dense()
            .unwrap();
        let u = inverse_hessian_factor(gram, k).unwrap();
        let imp: Vec<f32> = (0..k).map(|i| gram[i * k + i]).collect();
        let (jw, jkeep, bytes) =
            sparsegpt_joint(&w, n, k, &u, &imp, pattern, 0.0, WeightFormat::Q4_0).unwrap();
        let stored = SparseTensor::from_encoded(format, n, k, &jkeep, bytes)
            .unwrap()
            .to_dense()
            .unwrap();
        assert_eq!(stored, jw);
        let (e_after, e_joint) = (
            output_error(&w, &after, n, k, Some(st)),
            output_error(&w, &jw, n, k, Some(st)),
        );
        eprintln!("{name}: 2:4/q4_0 rounded after {e_after:.4}, joint {e_joint:.4}");
        assert!(
            e_joint < e_after,
            "{name}: joint {e_joint} vs after {e_after}"
        );
    }
}
