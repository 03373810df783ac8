//! Sparse weights in GGUF files, as companion tensors of standard types so
//! any GGUF reader parses the file (and llama.cpp, which cannot run them,
//! stops at the missing weight instead of misreading a private type id):
//!
//! - metadata `lottery.sparse.<name>` = the pattern (`"2:4"`, `"unstructured"`);
//! - `<name>.sp_mask`: i32 [k/32, n], bit j of word c of row r set when column
//!   32c + j is kept (engine/src/formats/sparse.rs);
//! - `<name>.sp_values`: the value format, 1-D: each row's kept values in
//!   column order, padded with zeros to a multiple of 32.
//!
//! The weight's shape is the mask's (k = 32 * its row length).

use super::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use crate::{Error, Result};
use lottery_engine::formats::{Pattern, SparseFormat, SparseTensor};
use lottery_engine::WeightFormat;

pub const KEY_PREFIX: &str = "lottery.sparse.";
pub const MASK_SUFFIX: &str = ".sp_mask";
pub const VALUES_SUFFIX: &str = ".sp_values";

/// Whether weight `name` is stored sparse in `g`.
pub fn is_sparse(g: &GgufFile, name: &str) -> bool {
    g.get(&format!("{KEY_PREFIX}{name}")).is_some()
}

/// Names of the weights stored sparse, in metadata order.
pub fn sparse_names(g: &GgufFile) -> Vec<String> {
    g.metadata()
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(KEY_PREFIX).map(str::to_string))
        .collect()
}

/// The dense weight a companion tensor belongs to, when `tensor` is one of a
/// weight that `g` declares sparse.
pub fn companion_of(g: &GgufFile, tensor: &str) -> Option<String> {
    [MASK_SUFFIX, VALUES_SUFFIX]
        .iter()
        .filter_map(|s| tensor.strip_suffix(s))
        .find(|base| is_sparse(g, base))
        .map(str::to_string)
}

fn value_format(t: GgmlType) -> Option<WeightFormat> {
    WeightFormat::from_ggml_type(t.id()).filter(|f| f.holds_sparse_values())
}

fn ggml_value_type(f: WeightFormat) -> Option<GgmlType> {
    if !f.holds_sparse_values() {
        return None;
    }
    GgmlType::from_u32(f.spec().ggml_type)
}

/// Reads weight `name` when it is stored sparse; every inconsistency (a
/// missing companion, a mask against the pattern or the value count, a
/// truncated tensor) is an error naming the tensor.
pub fn read_sparse(g: &GgufFile, name: &str) -> Result<Option<SparseTensor>> {
    let key = format!("{KEY_PREFIX}{name}");
    let Some(v) = g.get(&key) else {
        return Ok(None);
    };
    let bad = |msg: String| Error::Model(format!("sparse tensor `{name}`: {msg}"));
    let pattern_s = v.as_str().ok_or_else(|| Error::KeyType {
        key: key.clone(),
        expected: "string",
        found: v.meta_type().name().to_string(),
    })?;
    let pattern = Pattern::parse(pattern_s).map_err(|e| bad(format!("`{key}`: {e}")))?;
    let mask_t = g.require_tensor(&format!("{name}{MASK_SUFFIX}"))?;
    let vals_t = g.require_tensor(&format!("{name}{VALUES_SUFFIX}"))?;
    if mask_t.ggml_type != GgmlType::I32 || mask_t.dims.len() != 2 {
        return Err(bad(format!(
            "mask `{}` must be i32 with 2 dims, is {} {:?}",
            mask_t.name, mask_t.ggml_type, mask_t.dims
        )));
    }
    if vals_t.dims.len() != 1 {
        return Err(bad(format!(
            "values `{}` must be 1-D, have dims {:?}",
            vals_t.name, vals_t.dims
        )));
    }
    let values = value_format(vals_t.ggml_type).ok_or_else(|| {
        bad(format!(
            "values `{}` are {}, not one of f16, q8_0, q4_0, q4_1",
            vals_t.name, vals_t.ggml_type
        ))
    })?;
    let words = mask_t.dims[0] as usize;
    let n = mask_t.dims[1] as usize;
    let k = words
        .checked_mul(32)
        .ok_or_else(|| bad(format!("mask rows of {words} words overflow")))?;
    let mask: Vec<u32> = g
        .tensor_data(mask_t)?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let t = SparseTensor {
        format: SparseFormat::new(pattern, values).map_err(|e| bad(e.to_string()))?,
        n,
        k,
        mask,
        values: g.tensor_data(vals_t)?.to_vec(),
    };
    t.validate().map_err(|e| bad(e.to_string()))?;
    Ok(Some(t))
}

/// Adds weight `name` as a sparse tensor (its metadata key and companions).
pub fn add_sparse(w: &mut GgufWriter, name: &str, t: &SparseTensor) -> Result<()> {
    t.validate()
        .map_err(|e| Error::Model(format!("sparse tensor `{name}`: {e}")))?;
    let vt = ggml_value_type(t.format.values).ok_or_else(|| {
        Error::Model(format!(
            "sparse tensor `{name}`: no GGUF type for {} values",
            t.format.values.name()
        ))
    })?;
    w.add_metadata(
        format!("{KEY_PREFIX}{name}"),
        MetaValue::String(t.format.pattern.name()),
    )?;
    w.add_tensor(
        format!("{name}{MASK_SUFFIX}"),
        &[(t.k / 32) as u64, t.n as u64],
        GgmlType::I32,
        t.mask.iter().flat_map(|m| m.to_le_bytes()).collect(),
    )?;
    let count = t.values.len() / t.format.values.block_bytes() * t.format.values.block_size();
    if count == 0 {
        return Err(Error::Model(format!(
            "sparse tensor `{name}` keeps no weights"
        )));
    }
    w.add_tensor(
        format!("{name}{VALUES_SUFFIX}"),
        &[count as u64],
        vt,
        t.values.clone(),
    )
}
