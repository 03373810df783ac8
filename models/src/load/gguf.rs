//! GGUF container: reader (versions 2 and 3) and a minimal writer (version 3).
//!
//! Layout (little-endian throughout):
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count x  (key: string, value_type: u32, value)
//! tensor_count x (name: string, n_dims: u32, dims: [u64; n_dims], type: u32, offset: u64)
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor's `offset` is relative to the start of this section
//! string = (len: u64, utf-8 bytes)
//! ```
//!
//! The reader treats the file as hostile: every count is checked against the
//! bytes left before anything is allocated from it, every offset against the
//! file length, and every failure is an [`Error`] that names the key or tensor
//! and the byte offset; no input makes it panic.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the tensor data section and of every tensor in it, unless the
/// file says otherwise in `general.alignment`.
pub const DEFAULT_ALIGNMENT: u32 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Nested metadata arrays deeper than this are rejected: real files never nest
/// at all, and unbounded nesting would let a file overflow the parser's stack.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Longest metadata array accepted. Real vocabularies are ~260k entries; the
/// limit stops a small file from asking for gigabytes of `MetaValue`s (each
/// element costs 32 bytes in memory against as little as 1 byte on disk).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;

const ALIGNMENT_KEY: &str = "general.alignment";

// ---------------------------------------------------------------------------
// ggml tensor types
// ---------------------------------------------------------------------------

/// ggml tensor element types, with the ids used in GGUF files.
///
/// Ids 4, 5 (Q4_2, Q4_3), 31-33 (Q4_0_x_x) and 36-38 (IQ4_NL_x_x) were removed
/// from ggml and are rejected.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
}

impl GgmlType {
    /// Every known type, in id order.
    pub const ALL: [GgmlType; 34] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
        GgmlType::NVFP4,
        GgmlType::Q1_0,
    ];

    /// The type with GGUF id `id`, if ggml still defines it.
    pub fn from_u32(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    /// The GGUF id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// (name, elements per block, bytes per block), as in ggml's `type_traits`.
    fn traits(self) -> (&'static str, u64, u64) {
        use GgmlType::*;
        match self {
            F32 => ("f32", 1, 4),
            F16 => ("f16", 1, 2),
            Q4_0 => ("q4_0", 32, 18),
            Q4_1 => ("q4_1", 32, 20),
            Q5_0 => ("q5_0", 32, 22),
            Q5_1 => ("q5_1", 32, 24),
            Q8_0 => ("q8_0", 32, 34),
            Q8_1 => ("q8_1", 32, 36),
            Q2_K => ("q2_K", 256, 84),
            Q3_K => ("q3_K", 256, 110),
            Q4_K => ("q4_K", 256, 144),
            Q5_K => ("q5_K", 256, 176),
            Q6_K => ("q6_K", 256, 210),
            Q8_K => ("q8_K", 256, 292),
            IQ2_XXS => ("iq2_xxs", 256, 66),
            IQ2_XS => ("iq2_xs", 256, 74),
            IQ3_XXS => ("iq3_xxs", 256, 98),
            IQ1_S => ("iq1_s", 256, 50),
            IQ4_NL => ("iq4_nl", 32, 18),
            IQ3_S => ("iq3_s", 256, 110),
            IQ2_S => ("iq2_s", 256, 82),
            IQ4_XS => ("iq4_xs", 256, 136),
            I8 => ("i8", 1, 1),
            I16 => ("i16", 1, 2),
            I32 => ("i32", 1, 4),
            I64 => ("i64", 1, 8),
            F64 => ("f64", 1, 8),
            IQ1_M => ("iq1_m", 256, 56),
            BF16 => ("bf16", 1, 2),
            TQ1_0 => ("tq1_0", 256, 54),
            TQ2_0 => ("tq2_0", 256, 66),
            MXFP4 => ("mxfp4", 32, 17),
            NVFP4 => ("nvfp4", 64, 36),
            Q1_0 => ("q1_0", 128, 18),
        }
    }

    /// ggml's name for the type (`"q4_1"`, `"q6_K"`, `"bf16"`, ...).
    pub fn name(self) -> &'static str {
        self.traits().0
    }

    /// Elements per block (1 for plain scalar types).
    pub fn block_size(self) -> u64 {
        self.traits().1
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.traits().2
    }

    /// True for block-quantized types.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes needed for `n_elements` elements, or `None` if `n_elements` is not
    /// a whole number of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        if !n_elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_elements / self.block_size()).checked_mul(self.type_size())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------
// Metadata values
// ---------------------------------------------------------------------------

/// GGUF metadata value type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MetaType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl MetaType {
    pub fn from_u32(id: u32) -> Option<MetaType> {
        use MetaType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use MetaType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type occupies in a file; used to
    /// bound element counts by the bytes left before allocating.
    fn min_encoded_size(self) -> u64 {
        use MetaType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            String => 8,    // length prefix
            Array => 4 + 8, // element type + count
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Elements of one type (nested arrays may each have their own type).
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    pub fn meta_type(&self) -> MetaType {
        match self {
            MetaValue::U8(_) => MetaType::U8,
            MetaValue::I8(_) => MetaType::I8,
            MetaValue::U16(_) => MetaType::U16,
            MetaValue::I16(_) => MetaType::I16,
            MetaValue::U32(_) => MetaType::U32,
            MetaValue::I32(_) => MetaType::I32,
            MetaValue::F32(_) => MetaType::F32,
            MetaValue::Bool(_) => MetaType::Bool,
            MetaValue::String(_) => MetaType::String,
            MetaValue::Array(_) => MetaType::Array,
            MetaValue::U64(_) => MetaType::U64,
            MetaValue::I64(_) => MetaType::I64,
            MetaValue::F64(_) => MetaType::F64,
        }
    }

    /// Any integer value that is non-negative, widened to u64. Converters
    /// disagree on integer widths (u32 vs i32 vs u64 for the same key), so
    /// callers should not care which one a file used.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A floating-point value (f32, or f64 narrowed).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(v) => Some(v),
            MetaValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// A floating-point value (f64, or f32 widened).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Short description for error messages, e.g. `"array[49152] of string"`.
    pub fn describe(&self) -> String {
        match self {
            MetaValue::Array(a) => match a.first() {
                Some(first) => format!("array[{}] of {}", a.len(), first.meta_type().name()),
                None => "array[0]".to_string(),
            },
            other => other.meta_type().name().to_string(),
        }
    }
}

impl fmt::Display for MetaValue {
    /// Human-readable; long arrays and strings are abbreviated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
            MetaValue::String(s) => {
                if s.chars().count() > 80 {
                    let head: String = s.chars().take(77).collect();
                    write!(f, "{:?}...", head)
                } else {
                    write!(f, "{s:?}")
                }
            }
            MetaValue::Array(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().take(8).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if a.len() > 8 {
                    write!(f, ", ... ({} total)", a.len())?;
                }
                write!(f, "]")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tensor infos
// ---------------------------------------------------------------------------

/// Where one tensor lives in the file and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous row length, so a PyTorch
    /// `[out, in]` weight appears as `[in, out]`.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Product of the dims (1 for a zero-dimensional tensor).
    pub fn n_elements(&self) -> u64 {
        // Validated at parse time not to overflow; saturate rather than panic
        // for infos built by hand.
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Number of rows: every dimension but the first.
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Tensor data stays in the file (memory-mapped) until
/// [`GgufFile::tensor_data`] hands out a slice of it.
pub struct GgufFile {
    storage: Storage,
    path: Option<PathBuf>,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("len", &self.storage.bytes().len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private to this process. If another
        // process truncates or rewrites the file while it is mapped, reads may
        // see the new bytes or fault; that is the usual contract of every
        // mmap-based model loader and is documented for users (don't rewrite a
        // model file while it is loaded).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut parsed = parse(map.as_ref()).map_err(|e| e.with_path(path))?;
        parsed.path = Some(path.to_path_buf());
        Ok(parsed.into_file(Storage::Mmap(map)))
    }

    /// Parses a GGUF image held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let parsed = parse(&bytes)?;
        Ok(parsed.into_file(Storage::Owned(bytes)))
    }

    /// The path given to [`GgufFile::open`], if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the tensor data (from `general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the whole file in bytes.
    pub fn file_len(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key).ok_or_else(|| Error::MissingKey {
            key: key.to_string(),
        })
    }

    fn type_err(key: &str, expected: &'static str, v: &MetaValue) -> Error {
        let found = match v {
            MetaValue::Array(_) => v.describe(),
            _ if v.as_i64().is_some() || v.as_u64().is_some() => {
                format!("{} value {}", v.meta_type().name(), v)
            }
            _ => v.meta_type().name().to_string(),
        };
        Error::KeyType {
            key: key.to_string(),
            expected,
            found,
        }
    }

    /// An integer key as u32 (any integer type whose value fits).
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.require(key)?;
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| Self::type_err(key, "an integer in u32 range", v))
    }

    /// An integer key as u64 (any non-negative integer type).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| Self::type_err(key, "a non-negative integer", v))
    }

    /// A float key (f32, or f64 narrowed).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| Self::type_err(key, "a float", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| Self::type_err(key, "a bool", v))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::type_err(key, "a string", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&[MetaValue]> {
        let v = self.require(key)?;
        v.as_array()
            .ok_or_else(|| Self::type_err(key, "an array", v))
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        let arr = v
            .as_array()
            .ok_or_else(|| Self::type_err(key, "an array of strings", v))?;
        arr.iter()
            .map(|e| e.as_str())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Self::type_err(key, "an array of strings", v))
    }

    /// Like [`GgufFile::get_u32`], but `Ok(None)` when the key is absent.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.optional(key, Self::get_u32)
    }

    /// Like [`GgufFile::get_f32`], but `Ok(None)` when the key is absent.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.optional(key, Self::get_f32)
    }

    /// Like [`GgufFile::get_bool`], but `Ok(None)` when the key is absent.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.optional(key, Self::get_bool)
    }

    /// Like [`GgufFile::get_str`], but `Ok(None)` when the key is absent.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.get_str(key).map(Some)
    }

    fn optional<T>(&self, key: &str, f: impl Fn(&Self, &str) -> Result<T>) -> Result<Option<T>> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        f(self, key).map(Some)
    }

    /// `general.architecture` (e.g. `"llama"`); architecture keys are
    /// prefixed with it (`llama.block_count`).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor named `name`, or [`Error::MissingTensor`].
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })
    }

    /// The raw bytes of a tensor (blocks as stored, little-endian). Errors
    /// only when `info` did not come from this file and points outside it.
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let bytes = self.storage.bytes();
        let range = usize::try_from(info.offset)
            .ok()
            .zip(usize::try_from(info.size).ok())
            .and_then(|(start, size)| Some(start..start.checked_add(size)?));
        range.and_then(|r| bytes.get(r)).ok_or_else(|| {
            Error::Model(format!(
                "tensor '{}': data at bytes {}..+{} is outside this {}-byte file \
                 (was the TensorInfo taken from another file?)",
                info.name,
                info.offset,
                info.size,
                bytes.len()
            ))
        })
    }

    /// The whole file image.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
}

/// Everything `parse` learns, before it is joined with the storage.
struct Parsed {
    path: Option<PathBuf>,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl Parsed {
    fn into_file(self, storage: Storage) -> GgufFile {
        GgufFile {
            storage,
            path: self.path,
            version: self.version,
            alignment: self.alignment,
            data_offset: self.data_offset,
            metadata: self.metadata,
            meta_index: self.meta_index,
            tensors: self.tensors,
            tensor_index: self.tensor_index,
        }
    }
}

/// A bounds-checked little-endian cursor. Every read names what it was
/// reading (lazily, so the happy path formats nothing).
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos.min(self.buf.len())) as u64
    }

    fn pos(&self) -> u64 {
        self.pos as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let rem = self.remaining();
        if n > rem {
            return Err(Error::gguf(
                self.pos(),
                format!(
                    "{}: needs {n} bytes but only {rem} remain (file is {} bytes)",
                    what(),
                    self.buf.len()
                ),
            ));
        }
        // n <= rem <= usize::MAX here.
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let at = self.pos();
        let len = self.u64(&|| format!("{} (length)", what()))?;
        let rem = self.remaining();
        if len > rem {
            return Err(Error::gguf(
                at,
                format!(
                    "{}: string length {len} exceeds the {rem} bytes left in the file",
                    what()
                ),
            ));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            Error::gguf(
                at + 8 + e.utf8_error().valid_up_to() as u64,
                format!("{}: string is not valid UTF-8", what()),
            )
        })
    }
}

fn parse(buf: &[u8]) -> Result<Parsed> {
    let mut c = Cursor { buf, pos: 0 };

    if buf.len() < 4 {
        return Err(Error::gguf(
            0,
            format!("file is {} bytes, too short for the GGUF magic", buf.len()),
        ));
    }
    let magic = c.array::<4>(&|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(Error::gguf(
            0,
            format!(
                "bad magic {:02x?} ({:?}), expected \"GGUF\"",
                magic,
                String::from_utf8_lossy(&magic)
            ),
        ));
    }

    let version = c.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::gguf(
                4,
                "GGUF version 1 is not supported (only versions 2 and 3)",
            ))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(Error::gguf(
                4,
                format!("big-endian GGUF (version field reads {v:#010x}) is not supported"),
            ))
        }
        v => {
            return Err(Error::gguf(
                4,
                format!("unsupported GGUF version {v} (only versions 2 and 3)"),
            ))
        }
    }

    let tensor_count = c.u64(&|| "tensor count".into())?;
    let kv_count = c.u64(&|| "metadata key/value count".into())?;

    // Smallest possible records: a kv is an empty key (8) + type (4) + a u8
    // value (1); a tensor info is an empty name (8) + n_dims (4) + type (4) +
    // offset (8). Counts that can't fit in the rest of the file are lies.
    const MIN_KV: u128 = 8 + 4 + 1;
    const MIN_TENSOR: u128 = 8 + 4 + 4 + 8;
    let need = kv_count as u128 * MIN_KV + tensor_count as u128 * MIN_TENSOR;
    if need > c.remaining() as u128 {
        return Err(Error::gguf(
            8,
            format!(
                "header claims {tensor_count} tensors and {kv_count} metadata entries, \
                 which need at least {need} bytes but only {} remain",
                c.remaining()
            ),
        ));
    }

    // Both counts are now bounded by the file size, so they fit in usize.
    let mut metadata: Vec<(String, MetaValue)> = Vec::with_capacity(kv_count as usize);
    let mut meta_index: HashMap<String, usize> = HashMap::with_capacity(kv_count as usize);
    let mut alignment = DEFAULT_ALIGNMENT as u64;

    for i in 0..kv_count {
        let kv_at = c.pos();
        let key = c.string(&|| format!("metadata entry #{i} key"))?;
        let ty_at = c.pos();
        let ty_id = c.u32(&|| format!("metadata key '{key}' value type"))?;
        let ty = MetaType::from_u32(ty_id).ok_or_else(|| {
            Error::gguf(
                ty_at,
                format!("metadata key '{key}': unknown value type id {ty_id}"),
            )
        })?;
        let value_at = c.pos();
        let value = read_value(&mut c, ty, &key, 0)?;
        if key == ALIGNMENT_KEY {
            alignment = match value {
                MetaValue::U32(a) if a != 0 && a.is_power_of_two() => a as u64,
                ref v => {
                    return Err(Error::gguf(
                        value_at,
                        format!(
                        "metadata key '{ALIGNMENT_KEY}' must be a u32 power of two, found {} {}",
                        v.meta_type().name(),
                        v
                    ),
                    ))
                }
            };
        }
        if meta_index.contains_key(&key) {
            return Err(Error::gguf(
                kv_at,
                format!("duplicate metadata key '{key}'"),
            ));
        }
        meta_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(tensor_count as usize);
    let mut tensor_index: HashMap<String, usize> = HashMap::with_capacity(tensor_count as usize);
    // Where each info record started, for error messages about its data.
    let mut info_at: Vec<u64> = Vec::with_capacity(tensor_count as usize);
    // Offsets are relative until the data section start is known.
    let mut rel_offsets: Vec<u64> = Vec::with_capacity(tensor_count as usize);

    for i in 0..tensor_count {
        let at = c.pos();
        let name = c.string(&|| format!("tensor info #{i} name"))?;
        if tensor_index.contains_key(&name) {
            return Err(Error::gguf(at, format!("duplicate tensor name '{name}'")));
        }
        let nd_at = c.pos();
        let n_dims = c.u32(&|| format!("tensor '{name}' n_dims"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(Error::gguf(
                nd_at,
                format!("tensor '{name}': n_dims {n_dims} exceeds the limit of {MAX_DIMS}"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for d in 0..n_dims {
            let d_at = c.pos();
            let dim = c.u64(&|| format!("tensor '{name}' dim {d}"))?;
            if dim == 0 {
                return Err(Error::gguf(
                    d_at,
                    format!("tensor '{name}': dim {d} is zero"),
                ));
            }
            // ggml counts elements in int64_t.
            n_elements = n_elements
                .checked_mul(dim)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| {
                    Error::gguf(
                        d_at,
                        format!(
                            "tensor '{name}': element count overflows at dim {d} \
                             (dims so far {:?} x {dim}, limit {})",
                            dims,
                            i64::MAX
                        ),
                    )
                })?;
            dims.push(dim);
        }
        let ty_id = c.u32(&|| format!("tensor '{name}' type"))?;
        let ggml_type = GgmlType::from_u32(ty_id).ok_or_else(|| Error::UnsupportedTensorType {
            name: name.clone(),
            ggml_type: ty_id,
        })?;
        let off_at = c.pos();
        let rel = c.u64(&|| format!("tensor '{name}' offset"))?;

        let row_len = dims.first().copied().unwrap_or(1);
        if !row_len.is_multiple_of(ggml_type.block_size()) {
            return Err(Error::gguf(
                at,
                format!(
                    "tensor '{name}': row length {row_len} (dims {dims:?}) is not a multiple \
                     of the {} block size {}",
                    ggml_type,
                    ggml_type.block_size()
                ),
            ));
        }
        let size = ggml_type.bytes_for(n_elements).ok_or_else(|| {
            Error::gguf(
                at,
                format!(
                    "tensor '{name}': {n_elements} elements of {ggml_type} do not make a \
                     representable byte size"
                ),
            )
        })?;
        if !rel.is_multiple_of(alignment) {
            return Err(Error::gguf(
                off_at,
                format!(
                    "tensor '{name}': data offset {rel} is not a multiple of the alignment {alignment}"
                ),
            ));
        }

        tensor_index.insert(name.clone(), tensors.len());
        info_at.push(at);
        rel_offsets.push(rel);
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset: 0,
            size,
        });
    }

    let file_len = buf.len() as u64;
    let data_offset = align_up(c.pos(), alignment)
        .ok_or_else(|| Error::gguf(c.pos(), "data section offset overflows when aligned"))?;

    for (i, t) in tensors.iter_mut().enumerate() {
        let start = data_offset.checked_add(rel_offsets[i]);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len => t.offset = s,
            _ => {
                return Err(Error::gguf(
                    info_at[i],
                    format!(
                        "tensor '{}': data at relative offset {} ({} bytes, data section starts \
                         at {data_offset}) extends past the end of the {file_len}-byte file",
                        t.name, rel_offsets[i], t.size
                    ),
                ))
            }
        }
    }

    // Overlap check: sort by start, each must end before the next begins.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].offset, tensors[i].size));
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        // offset + size was checked against the file length above.
        if a.offset + a.size > b.offset {
            return Err(Error::gguf(
                info_at[w[1]],
                format!(
                    "tensor '{}' (bytes {}..{}) overlaps tensor '{}' (bytes {}..{})",
                    b.name,
                    b.offset,
                    b.offset + b.size,
                    a.name,
                    a.offset,
                    a.offset + a.size
                ),
            ));
        }
    }

    Ok(Parsed {
        path: None,
        version,
        alignment,
        data_offset,
        metadata,
        meta_index,
        tensors,
        tensor_index,
    })
}

fn read_value(c: &mut Cursor<'_>, ty: MetaType, key: &str, depth: usize) -> Result<MetaValue> {
    let what = || format!("metadata key '{key}' {} value", ty.name());
    let what: &dyn Fn() -> String = &what;
    Ok(match ty {
        MetaType::U8 => MetaValue::U8(c.u8(what)?),
        MetaType::I8 => MetaValue::I8(c.u8(what)? as i8),
        MetaType::U16 => MetaValue::U16(c.u16(what)?),
        MetaType::I16 => MetaValue::I16(c.u16(what)? as i16),
        MetaType::U32 => MetaValue::U32(c.u32(what)?),
        MetaType::I32 => MetaValue::I32(c.u32(what)? as i32),
        MetaType::F32 => MetaValue::F32(f32::from_bits(c.u32(what)?)),
        MetaType::U64 => MetaValue::U64(c.u64(what)?),
        MetaType::I64 => MetaValue::I64(c.u64(what)? as i64),
        MetaType::F64 => MetaValue::F64(f64::from_bits(c.u64(what)?)),
        MetaType::Bool => {
            let at = c.pos();
            match c.u8(what)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(Error::gguf(
                        at,
                        format!("metadata key '{key}': bool byte is {b}, expected 0 or 1"),
                    ))
                }
            }
        }
        MetaType::String => MetaValue::String(c.string(what)?),
        MetaType::Array => {
            let at = c.pos();
            if depth >= MAX_ARRAY_DEPTH {
                return Err(Error::gguf(
                    at,
                    format!(
                        "metadata key '{key}': arrays nested deeper than the limit of {MAX_ARRAY_DEPTH}"
                    ),
                ));
            }
            let elem_id = c.u32(&|| format!("metadata key '{key}' array element type"))?;
            let elem = MetaType::from_u32(elem_id).ok_or_else(|| {
                Error::gguf(
                    at,
                    format!("metadata key '{key}': unknown array element type id {elem_id}"),
                )
            })?;
            let n = c.u64(&|| format!("metadata key '{key}' array length"))?;
            if n > MAX_ARRAY_LEN {
                return Err(Error::gguf(
                    at + 4,
                    format!(
                        "metadata key '{key}': array length {n} exceeds the limit of {MAX_ARRAY_LEN}"
                    ),
                ));
            }
            let need = n * elem.min_encoded_size(); // n <= 2^24: no overflow
            if need > c.remaining() {
                return Err(Error::gguf(
                    at + 4,
                    format!(
                        "metadata key '{key}': array of {n} {} needs at least {need} bytes \
                         but only {} remain",
                        elem.name(),
                        c.remaining()
                    ),
                ));
            }
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(read_value(c, elem, key, depth + 1)?);
            }
            MetaValue::Array(items)
        }
    })
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    // `a` is a non-zero power of two.
    x.checked_add(a - 1).map(|v| v & !(a - 1))
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF version 3 file: metadata in insertion order, then tensors
/// in insertion order, each aligned to `general.alignment`.
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT as u64,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Adds a metadata entry. `general.alignment` (u32, power of two) also
    /// sets the alignment the writer uses. Arrays must be homogeneous.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: MetaValue) -> Result<()> {
        let key = key.into();
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(Error::Model(format!(
                "GGUF writer: duplicate metadata key '{key}'"
            )));
        }
        check_homogeneous(&key, &value, 0)?;
        if key == ALIGNMENT_KEY {
            match value {
                MetaValue::U32(a) if a != 0 && a.is_power_of_two() => self.alignment = a as u64,
                ref v => {
                    return Err(Error::Model(format!(
                        "GGUF writer: '{ALIGNMENT_KEY}' must be a u32 power of two, got {} {v}",
                        v.meta_type().name()
                    )))
                }
            }
        }
        self.metadata.push((key, value));
        Ok(())
    }

    /// Adds a tensor from raw, already-encoded bytes. `dims` are in ggml order
    /// (`dims[0]` = row length).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> Result<()> {
        let name = name.into();
        let bad = |msg: String| Error::Model(format!("GGUF writer: tensor '{name}': {msg}"));
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(bad("duplicate tensor name".into()));
        }
        if dims.len() > MAX_DIMS {
            return Err(bad(format!(
                "{} dims exceed the limit of {MAX_DIMS}",
                dims.len()
            )));
        }
        if dims.contains(&0) {
            return Err(bad(format!("zero dim in {dims:?}")));
        }
        let n = dims
            .iter()
            .try_fold(1u64, |a, &d| {
                a.checked_mul(d).filter(|&n| n <= i64::MAX as u64)
            })
            .ok_or_else(|| bad(format!("element count of {dims:?} overflows")))?;
        let row = dims.first().copied().unwrap_or(1);
        if !row.is_multiple_of(ggml_type.block_size()) {
            return Err(bad(format!(
                "row length {row} is not a multiple of the {ggml_type} block size {}",
                ggml_type.block_size()
            )));
        }
        let size = ggml_type
            .bytes_for(n)
            .ok_or_else(|| bad(format!("size of {n} {ggml_type} elements overflows")))?;
        if data.len() as u64 != size {
            return Err(bad(format!(
                "{} data bytes given, {ggml_type} {dims:?} needs {size}",
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        Ok(())
    }

    /// Serialises the file into memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    /// Serialises the file to `w`.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_str(&mut head, k);
            head.extend_from_slice(&(v.meta_type() as u32).to_le_bytes());
            write_value(&mut head, v);
        }
        let a = self.alignment;
        let mut rel = 0u64;
        let mut rels = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            write_str(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            head.extend_from_slice(&rel.to_le_bytes());
            rels.push(rel);
            rel = align_up(rel + t.data.len() as u64, a).ok_or_else(too_big)?;
        }
        w.write_all(&head)?;
        if self.tensors.is_empty() {
            return Ok(());
        }
        let head_len = head.len() as u64;
        let data_start = align_up(head_len, a).ok_or_else(too_big)?;
        write_zeros(w, data_start - head_len)?;
        let mut here = 0u64;
        for (t, &r) in self.tensors.iter().zip(&rels) {
            write_zeros(w, r - here)?;
            w.write_all(&t.data)?;
            here = r + t.data.len() as u64;
        }
        Ok(())
    }

    /// Writes the file to `path` (through a buffered writer).
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = std::io::BufWriter::new(f);
        self.write_to(&mut w).map_err(|e| Error::io(path, e))?;
        w.flush().map_err(|e| Error::io(path, e))
    }
}

fn check_homogeneous(key: &str, v: &MetaValue, depth: usize) -> Result<()> {
    if let MetaValue::Array(items) = v {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(Error::Model(format!(
                "GGUF writer: metadata key '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH}"
            )));
        }
        if items.len() as u64 > MAX_ARRAY_LEN {
            return Err(Error::Model(format!(
                "GGUF writer: metadata key '{key}': array length {} exceeds {MAX_ARRAY_LEN}",
                items.len()
            )));
        }
        if let Some(first) = items.first() {
            let t = first.meta_type();
            if let Some(odd) = items.iter().find(|e| e.meta_type() != t) {
                return Err(Error::Model(format!(
                    "GGUF writer: metadata key '{key}': array mixes {} and {}",
                    t.name(),
                    odd.meta_type().name()
                )));
            }
        }
        for e in items {
            check_homogeneous(key, e, depth + 1)?;
        }
    }
    Ok(())
}

fn too_big() -> std::io::Error {
    std::io::Error::other("GGUF writer: file size overflows u64")
}

fn write_zeros(w: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => write_str(out, s),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(items) => {
            // An empty array's element type is unknowable from a Vec; u8 is
            // as good as any and reads back as an empty array.
            let elem = items.first().map_or(MetaType::U8, MetaValue::meta_type);
            out.extend_from_slice(&(elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for e in items {
                write_value(out, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_table_matches_ggml() {
        // Spot checks against ggml's type_traits / gguf-py GGML_QUANT_SIZES.
        let expect: &[(u32, u64, u64)] = &[
            (0, 1, 4),
            (1, 1, 2),
            (2, 32, 18),
            (3, 32, 20),
            (6, 32, 22),
            (7, 32, 24),
            (8, 32, 34),
            (9, 32, 36),
            (10, 256, 84),
            (11, 256, 110),
            (12, 256, 144),
            (13, 256, 176),
            (14, 256, 210),
            (15, 256, 292),
            (16, 256, 66),
            (17, 256, 74),
            (18, 256, 98),
            (19, 256, 50),
            (20, 32, 18),
            (21, 256, 110),
            (22, 256, 82),
            (23, 256, 136),
            (24, 1, 1),
            (25, 1, 2),
            (26, 1, 4),
            (27, 1, 8),
            (28, 1, 8),
            (29, 256, 56),
            (30, 1, 2),
            (34, 256, 54),
            (35, 256, 66),
            (39, 32, 17),
            (40, 64, 36),
            (41, 128, 18),
        ];
        assert_eq!(expect.len(), GgmlType::ALL.len());
        for &(id, bs, ts) in expect {
            let t = GgmlType::from_u32(id).unwrap_or_else(|| panic!("id {id} unknown"));
            assert_eq!((t.id(), t.block_size(), t.type_size()), (id, bs, ts), "{t}");
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 42, 1000, u32::MAX] {
            assert!(GgmlType::from_u32(removed).is_none(), "{removed}");
        }
    }

    #[test]
    fn align_up_works() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(32, 32), Some(32));
        assert_eq!(align_up(u64::MAX, 32), None);
    }
}
