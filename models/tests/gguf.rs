//! GGUF reader/writer: round trips, hostile files, and the real model.

mod common;

use lottery_models::load::gguf::{MAX_ARRAY_DEPTH, MAX_ARRAY_LEN};
use lottery_models::load::{GgmlType, GgufFile, GgufWriter, MetaValue};
use lottery_models::Error;

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// Every metadata type, including nested and empty arrays.
fn all_metadata() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("general.architecture", MetaValue::String("llama".into())),
        ("t.u8", MetaValue::U8(200)),
        ("t.i8", MetaValue::I8(-100)),
        ("t.u16", MetaValue::U16(60000)),
        ("t.i16", MetaValue::I16(-30000)),
        ("t.u32", MetaValue::U32(4_000_000_000)),
        ("t.i32", MetaValue::I32(-2_000_000_000)),
        ("t.f32", MetaValue::F32(1.5e-5)),
        ("t.bool_true", MetaValue::Bool(true)),
        ("t.bool_false", MetaValue::Bool(false)),
        ("t.string", MetaValue::String("héllo <|im_end|> 😀".into())),
        ("t.empty_string", MetaValue::String(String::new())),
        ("t.u64", MetaValue::U64(u64::MAX)),
        ("t.i64", MetaValue::I64(i64::MIN)),
        ("t.f64", MetaValue::F64(-2.5e300)),
        (
            "t.str_array",
            MetaValue::Array(vec![
                MetaValue::String("a".into()),
                MetaValue::String("Ġb c".into()),
                MetaValue::String(String::new()),
            ]),
        ),
        (
            "t.i32_array",
            MetaValue::Array((0..10).map(|i| MetaValue::I32(i - 5)).collect()),
        ),
        ("t.empty_array", MetaValue::Array(vec![])),
        (
            "t.nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)]),
                MetaValue::Array(vec![MetaValue::String("x".into())]),
                MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::F64(0.5)])]),
            ]),
        ),
        ("t.u32_one", MetaValue::U32(7)),
    ]
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A small valid file: all metadata types and three tensors of three types.
fn small_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in all_metadata() {
        w.add_metadata(k, v).unwrap();
    }
    w.add_tensor(
        "a.weight",
        &[3, 2],
        GgmlType::F32,
        f32_bytes(&[1., 2., 3., 4., 5., 6.]),
    )
    .unwrap();
    // 2 rows of one Q8_0 block each: 2 * 34 bytes.
    w.add_tensor("b.weight", &[32, 2], GgmlType::Q8_0, pattern(68, 1))
        .unwrap();
    w.add_tensor("c.bias", &[5], GgmlType::F16, pattern(10, 2))
        .unwrap();
    w
}

fn small_file() -> Vec<u8> {
    small_writer().to_bytes()
}

/// Hand-rolled GGUF bytes for files the writer refuses to make.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(&mut self, n: usize) -> Vec<u8> {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.extend(std::iter::repeat_n(0xAB, n));
        std::mem::take(&mut self.0)
    }
}

/// Parses `bytes`, expecting an error whose message contains every needle.
fn expect_err(bytes: Vec<u8>, needles: &[&str]) -> Error {
    let err = match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("expected an error containing {needles:?}, parsed {f:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} does not mention {n:?}");
    }
    err
}

// ---------------------------------------------------------------------------
// round trips
// ---------------------------------------------------------------------------

#[test]
fn writer_round_trips_every_metadata_type_and_tensor() {
    let bytes = small_file();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);

    let want = all_metadata();
    assert_eq!(f.metadata().len(), want.len());
    for ((k, v), (wk, wv)) in f.metadata().iter().zip(&want) {
        assert_eq!(k, wk, "metadata order");
        assert_eq!(v, wv, "value of {k}");
    }
    assert_eq!(f.get("t.nested"), Some(&want[18].1));
    assert_eq!(f.architecture().unwrap(), "llama");

    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a.weight", "b.weight", "c.bias"]);

    let a = f.tensor("a.weight").unwrap();
    assert_eq!(
        (a.dims.as_slice(), a.ggml_type, a.size),
        (&[3u64, 2][..], GgmlType::F32, 24)
    );
    assert_eq!(a.n_elements(), 6);
    assert_eq!((a.row_len(), a.n_rows()), (3, 2));
    assert_eq!(
        f.tensor_data(a).unwrap(),
        f32_bytes(&[1., 2., 3., 4., 5., 6.])
    );

    let b = f.tensor("b.weight").unwrap();
    assert_eq!(
        (b.ggml_type, b.size, b.n_elements()),
        (GgmlType::Q8_0, 68, 64)
    );
    assert_eq!(f.tensor_data(b).unwrap(), pattern(68, 1));

    let c = f.tensor("c.bias").unwrap();
    assert_eq!((c.ggml_type, c.size), (GgmlType::F16, 10));
    assert_eq!(f.tensor_data(c).unwrap(), pattern(10, 2));

    for t in f.tensors() {
        assert_eq!((t.offset - f.data_offset()) % 32, 0, "{} aligned", t.name);
    }
    // The last tensor ends the file: nothing after it.
    assert_eq!(c.offset + c.size, bytes.len() as u64);
    assert!(f.tensor("nope").is_none());
}

#[test]
fn writer_honours_custom_alignment_and_file_round_trip() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", MetaValue::U32(64))
        .unwrap();
    w.add_tensor("x", &[1], GgmlType::F32, f32_bytes(&[7.0]))
        .unwrap();
    w.add_tensor("y", &[3], GgmlType::F32, f32_bytes(&[1.0, 2.0, 3.0]))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("lottery-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("align64.gguf");
    w.write_file(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.path(), Some(path.as_path()));
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    let y = f.tensor("y").unwrap();
    assert_eq!(y.offset - f.data_offset(), 64);
    assert_eq!(f.tensor_data(y).unwrap(), f32_bytes(&[1.0, 2.0, 3.0]));
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn metadata_only_file_and_version_2() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", MetaValue::U8(1)).unwrap();
    let mut bytes = w.to_bytes();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert!(f.tensors().is_empty());
    // Version 2 has the same layout as version 3.
    bytes[4] = 2;
    assert_eq!(GgufFile::from_bytes(bytes).unwrap().version(), 2);
}

#[test]
fn open_missing_file_names_path() {
    let err = GgufFile::open("/nonexistent/dir/model.gguf").unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(
        err.to_string().contains("/nonexistent/dir/model.gguf"),
        "{err}"
    );
}

#[test]
fn open_corrupt_file_names_path_and_offset() {
    let dir = std::env::temp_dir().join(format!("lottery-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.gguf");
    std::fs::write(&path, b"GGUFxxxx").unwrap();
    let msg = GgufFile::open(&path).unwrap_err().to_string();
    assert!(
        msg.contains("bad.gguf") && msg.contains("byte offset 4"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------
// typed getters
// ---------------------------------------------------------------------------

#[test]
fn typed_getters_convert_and_report() {
    let f = GgufFile::from_bytes(small_file()).unwrap();
    assert_eq!(f.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u32("t.u8").unwrap(), 200);
    assert_eq!(f.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(f.get_f32("t.f32").unwrap(), 1.5e-5);
    assert!(f.get_bool("t.bool_true").unwrap());
    assert_eq!(f.get_str("t.string").unwrap(), "héllo <|im_end|> 😀");
    assert_eq!(f.get_str_array("t.str_array").unwrap(), ["a", "Ġb c", ""]);
    assert_eq!(f.opt_u32("absent").unwrap(), None);
    assert_eq!(f.opt_u32("t.u32_one").unwrap(), Some(7));

    match f.get_u32("absent.key") {
        Err(Error::MissingKey { key }) => assert_eq!(key, "absent.key"),
        other => panic!("{other:?}"),
    }
    let msg = f.get_u32("t.u64").unwrap_err().to_string();
    assert!(msg.contains("t.u64") && msg.contains("u32"), "{msg}");
    let msg = f.get_u32("t.i8").unwrap_err().to_string();
    assert!(msg.contains("t.i8") && msg.contains("-100"), "{msg}");
    let msg = f.get_str("t.u8").unwrap_err().to_string();
    assert!(msg.contains("t.u8") && msg.contains("string"), "{msg}");
    let msg = f.get_str_array("t.i32_array").unwrap_err().to_string();
    assert!(
        msg.contains("t.i32_array") && msg.contains("array[10] of i32"),
        "{msg}"
    );
    assert!(f.opt_u32("t.string").is_err());
    match f.require_tensor("blk.0.missing") {
        Err(Error::MissingTensor { name }) => assert_eq!(name, "blk.0.missing"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// hostile files
// ---------------------------------------------------------------------------

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_file();
    for len in 0..bytes.len() {
        match GgufFile::from_bytes(bytes[..len].to_vec()) {
            Ok(_) => panic!("prefix of {len}/{} bytes parsed", bytes.len()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("byte offset"), "prefix {len}: {msg}");
            }
        }
    }
    assert!(GgufFile::from_bytes(bytes).is_ok());
}

#[test]
fn random_corruption_never_panics() {
    // xorshift: deterministic, no extra crates.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let good = small_file();
    let mut ok = 0;
    for _ in 0..4000 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = match next() % 4 {
                0 => 0xFF,
                1 => 0,
                _ => next() as u8,
            };
        }
        if next() % 8 == 0 {
            b.truncate((next() % b.len() as u64) as usize);
        }
        if let Ok(f) = GgufFile::from_bytes(b) {
            ok += 1;
            for t in f.tensors() {
                let data = f.tensor_data(t).expect("validated tensors are readable");
                assert_eq!(data.len() as u64, t.size);
            }
        }
    }
    // Flipping bytes inside tensor data or string contents leaves valid files.
    assert!(ok > 0);
}

#[test]
fn bad_magic() {
    let mut b = small_file();
    b[..4].copy_from_slice(b"GGML");
    expect_err(b, &["bad magic", "byte offset 0"]);
    expect_err(b"GG".to_vec(), &["too short", "byte offset 0"]);
    expect_err(Vec::new(), &["too short"]);
}

#[test]
fn bad_versions() {
    for (v, needle) in [
        (1u32, "version 1 is not supported"),
        (4, "unsupported GGUF version 4"),
        (0, "unsupported GGUF version 0"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let mut b = small_file();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        expect_err(b, &[needle, "byte offset 4"]);
    }
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    expect_err(
        Raw::header(3, u64::MAX, 0).0,
        &["18446744073709551615 tensors", "byte offset 8"],
    );
    expect_err(
        Raw::header(3, 0, u64::MAX).0,
        &["18446744073709551615 metadata", "byte offset 8"],
    );
    expect_err(Raw::header(3, u64::MAX, u64::MAX).0, &["byte offset 8"]);
    // A count just one more than what the bytes left could hold.
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("a", 1);
    expect_err(r.0, &["2 metadata entries"]);
}

#[test]
fn absurd_string_lengths() {
    // Key length.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).u32(0).u64(0);
    expect_err(
        r.0,
        &[
            "metadata entry #0 key",
            "string length 18446744073709551615",
            "byte offset 24",
        ],
    );
    // String value length.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.name").u32(8).u64(1 << 40).u64(0);
    expect_err(r.0, &["general.name", "string length 1099511627776"]);
    // Tensor name length.
    let mut r = Raw::header(3, 1, 0);
    r.u64(u64::MAX - 3).u32(0).u32(0).u64(0).u64(0);
    expect_err(r.0, &["tensor info #0 name", "string length"]);
}

#[test]
fn absurd_array_lengths_and_nesting() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"tokenizer.ggml.tokens").u32(9).u32(8).u64(u64::MAX);
    expect_err(
        r.0,
        &[
            "tokenizer.ggml.tokens",
            "array length 18446744073709551615",
            &MAX_ARRAY_LEN.to_string(),
        ],
    );

    // Within the length limit but more elements than bytes left.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"tokenizer.ggml.scores")
        .u32(9)
        .u32(6)
        .u64(1000)
        .u32(0);
    expect_err(
        r.0,
        &["tokenizer.ggml.scores", "array of 1000 f32", "4000 bytes"],
    );

    // Arrays of arrays of ... deeper than the limit.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"deep").u32(9);
    for _ in 0..MAX_ARRAY_DEPTH + 2 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    expect_err(r.0, &["deep", "nested deeper"]);

    let mut r = Raw::header(3, 0, 1);
    r.str(b"weird").u32(9).u32(77).u64(1);
    expect_err(r.0, &["weird", "unknown array element type id 77"]);
}

#[test]
fn bad_metadata_values() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k.type").u32(13).u32(0);
    expect_err(
        r.0,
        &["k.type", "unknown value type id 13", "byte offset 38"],
    );

    let mut r = Raw::header(3, 0, 1);
    r.str(b"k.bool").u32(7);
    r.0.push(2);
    expect_err(r.0, &["k.bool", "bool byte is 2"]);

    let mut r = Raw::header(3, 0, 1);
    r.str(b"bad\xFFkey").u32(4).u32(1);
    expect_err(r.0, &["metadata entry #0 key", "UTF-8", "byte offset 35"]);

    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("dup.key", 1).kv_u32("dup.key", 2);
    expect_err(r.0, &["duplicate metadata key 'dup.key'"]);
}

#[test]
fn bad_alignment() {
    for (bytes_of_value, ty, needle) in [
        (0u32.to_le_bytes().to_vec(), 4u32, "found u32 0"),
        (48u32.to_le_bytes().to_vec(), 4, "found u32 48"),
        (64u64.to_le_bytes().to_vec(), 10, "found u64 64"),
    ] {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"general.alignment").u32(ty);
        r.0.extend_from_slice(&bytes_of_value);
        expect_err(r.0, &["general.alignment", "power of two", needle]);
    }
}

#[test]
fn too_many_dims() {
    let mut r = Raw::header(3, 1, 0);
    r.str(b"t9").u32(9);
    for _ in 0..9 {
        r.u64(1);
    }
    r.u32(0).u64(0);
    expect_err(
        r.data(64),
        &[
            "tensor 't9'",
            "n_dims 9 exceeds the limit of 4",
            "byte offset 34",
        ],
    );
}

#[test]
fn zero_dim() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("zero", &[4, 0], 0, 0);
    expect_err(r.data(16), &["tensor 'zero'", "dim 1 is zero"]);
}

#[test]
fn dims_product_overflow() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("huge", &[1 << 32, 1 << 32], 0, 0);
    expect_err(r.data(16), &["tensor 'huge'", "overflows at dim 1"]);
    // Fits in u64 but not in ggml's int64 element count.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("huge2", &[1 << 32, 1 << 31, 2], 0, 0);
    expect_err(r.data(16), &["tensor 'huge2'", "overflows"]);
}

#[test]
fn unknown_tensor_type() {
    for ty in [4u32, 33, 42, 9999] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("blk.0.ffn_up.weight", &[32], ty, 0);
        let err = expect_err(r.data(64), &["blk.0.ffn_up.weight", &ty.to_string()]);
        match err {
            Error::UnsupportedTensorType { name, ggml_type } => {
                assert_eq!((name.as_str(), ggml_type), ("blk.0.ffn_up.weight", ty))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn row_not_a_whole_number_of_blocks() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("q", &[31, 2], GgmlType::Q8_0 as u32, 0);
    expect_err(
        r.data(128),
        &["tensor 'q'", "row length 31", "block size 32"],
    );
}

#[test]
fn tensor_data_outside_file() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("far", &[8], 0, 1 << 20);
    expect_err(r.data(32), &["tensor 'far'", "past the end"]);
    // Size alone runs past the end.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("long", &[100], 0, 0);
    expect_err(r.data(399), &["tensor 'long'", "400 bytes", "past the end"]);
    // Offset near u64::MAX (aligned) must not overflow.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("wrap", &[8], 0, u64::MAX - 31);
    expect_err(r.data(32), &["tensor 'wrap'", "past the end"]);
}

#[test]
fn unaligned_tensor_offset() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("odd", &[4], 0, 4);
    expect_err(
        r.data(64),
        &[
            "tensor 'odd'",
            "offset 4 is not a multiple of the alignment 32",
        ],
    );
}

#[test]
fn overlapping_tensors() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("first", &[16], 0, 0); // bytes 0..64
    r.tensor("second", &[8], 0, 32); // bytes 32..64
    expect_err(r.data(128), &["overlaps", "'first'", "'second'"]);
}

#[test]
fn duplicate_tensor_names() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("same", &[8], 0, 0);
    r.tensor("same", &[8], 0, 32);
    expect_err(r.data(64), &["duplicate tensor name 'same'"]);
}

#[test]
fn writer_rejects_bad_input() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", MetaValue::U8(1)).unwrap();
    assert!(w.add_metadata("a", MetaValue::U8(2)).is_err());
    let mixed = MetaValue::Array(vec![MetaValue::U8(1), MetaValue::I8(1)]);
    assert!(w
        .add_metadata("mixed", mixed)
        .unwrap_err()
        .to_string()
        .contains("mixes u8 and i8"));
    assert!(w
        .add_metadata("general.alignment", MetaValue::U32(3))
        .is_err());
    let msg = w
        .add_tensor("t", &[32], GgmlType::Q4_1, vec![0; 19])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'t'") && msg.contains("needs 20"), "{msg}");
    assert!(w
        .add_tensor("t", &[31], GgmlType::Q4_1, vec![0; 20])
        .is_err());
    assert!(w
        .add_tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4])
        .is_err());
    assert!(w.add_tensor("t", &[0], GgmlType::F32, vec![]).is_err());
    w.add_tensor("t", &[32], GgmlType::Q4_1, vec![0; 20])
        .unwrap();
    assert!(w
        .add_tensor("t", &[32], GgmlType::Q4_1, vec![0; 20])
        .is_err());
}

// ---------------------------------------------------------------------------
// the real model
// ---------------------------------------------------------------------------

#[test]
fn real_model_smollm2_135m() {
    let Some(f) = common::model() else { return };
    eprintln!("{f:?}");
    for (k, v) in f.metadata() {
        eprintln!("  {k} = {v}");
    }
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u32("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_u32("llama.context_length").unwrap(), 8192);
    assert_eq!(f.get_u32("llama.vocab_size").unwrap(), 49152);
    assert_eq!(f.get_u32("llama.rope.dimension_count").unwrap(), 64);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(
        f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        1e-5
    );
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert_eq!(
        f.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );
    assert_eq!(f.metadata().len(), 33);

    // 30 blocks x 9 tensors + token_embd + output_norm; the output matrix
    // is tied to token_embd (no output.weight).
    assert_eq!(f.tensors().len(), 272);
    assert!(f.tensor("output.weight").is_none());
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.ggml_type, emb.dims.as_slice()),
        (GgmlType::Q8_0, &[576u64, 49152][..])
    );
    assert_eq!(emb.size, 576 / 32 * 34 * 49152);
    let norm = f.tensor("output_norm.weight").unwrap();
    assert_eq!(
        (norm.ggml_type, norm.dims.as_slice()),
        (GgmlType::F32, &[576u64][..])
    );

    let per_block = [
        ("attn_norm.weight", GgmlType::F32, vec![576]),
        ("ffn_norm.weight", GgmlType::F32, vec![576]),
        ("attn_q.weight", GgmlType::Q4_1, vec![576, 576]),
        ("attn_k.weight", GgmlType::Q4_1, vec![576, 192]),
        ("attn_v.weight", GgmlType::Q4_1, vec![576, 192]),
        ("attn_output.weight", GgmlType::Q4_1, vec![576, 576]),
        ("ffn_gate.weight", GgmlType::Q4_1, vec![576, 1536]),
        ("ffn_up.weight", GgmlType::Q4_1, vec![576, 1536]),
        ("ffn_down.weight", GgmlType::Q4_1, vec![1536, 576]),
    ];
    for i in 0..30 {
        for (suffix, ty, dims) in &per_block {
            let name = format!("blk.{i}.{suffix}");
            let t = f.require_tensor(&name).unwrap();
            assert_eq!((t.ggml_type, &t.dims), (*ty, dims), "{name}");
        }
    }

    // Tensors tile the data section: total size matches the file.
    let end = f.tensors().iter().map(|t| t.offset + t.size).max().unwrap();
    assert_eq!(end, f.file_len());
    let norm_data = f.tensor_data(norm).unwrap();
    let first = f32::from_le_bytes(norm_data[..4].try_into().unwrap());
    assert!(
        first.is_finite() && first != 0.0,
        "output_norm[0] = {first}"
    );
}
