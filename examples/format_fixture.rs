//! Writes a GGUF with one random tensor per weight format (quantized by our
//! quantizers) and, beside each, our CPU decode of it as F32. Checking the
//! pairs with another implementation (e.g. gguf-py's dequantize) confirms our
//! block layouts are ggml's:
//!   cargo run --release --example format_fixture -- /tmp/formats.gguf
//!   python3 scripts/check-format-fixture.py /tmp/formats.gguf
use lottery::engine::formats::{dequantize, quantize};
use lottery::engine::reference::Rng;
use lottery::engine::WeightFormat;
use lottery::models::load::{GgmlType, GgufWriter};
use lottery::models::quantize::ggml_type;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "formats.gguf".into());
    let mut w = GgufWriter::new();
    let mut rng = Rng::new(3);
    for fmt in WeightFormat::ALL {
        let ty = ggml_type(fmt);
        let x = rng.vec(4 * 256, 1.0);
        let q = quantize(fmt, &x)?;
        let mut deq = vec![0f32; x.len()];
        dequantize(fmt, &q, &mut deq)?;
        w.add_tensor(fmt.name(), &[256, 4], ty, q)?;
        w.add_tensor(
            format!("{}.decoded", fmt.name()),
            &[256, 4],
            GgmlType::F32,
            deq.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )?;
    }
    w.write_file(&path)?;
    println!("{path}");
    Ok(())
}
