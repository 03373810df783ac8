//! WGSL sources (embedded from `shaders/`) and the small preprocessor that
//! turns one `.wgsl` file plus typed defines into one shader variant.
//!
//! Directives, each on a line of its own:
//! - `#include "dir/file.wgsl"`: paste another embedded file (once per variant);
//! - `#if NAME` / `#else` / `#endif`: keep lines when NAME is defined and not "0";
//! - `{{NAME}}` anywhere in a line: replaced by the define's value.

use crate::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

macro_rules! sources {
    ($($path:literal),* $(,)?) => {
        /// Every embedded WGSL file, by path relative to `shaders/`.
        pub const SOURCES: &[(&str, &str)] = &[
            $(($path, include_str!(concat!("../../../shaders/", $path))),)*
        ];
    };
}

sources!(
    "common/step.wgsl",
    "common/proj.wgsl",
    "common/group_units.wgsl",
    "common/q4_gdot.wgsl",
    "common/blk.wgsl",
    "common/gate_act.wgsl",
    "common/kscale.wgsl",
    "common/q5.wgsl",
    "common/kv_types.wgsl",
    "common/kv_read.wgsl",
    "formats/f32.wgsl",
    "formats/f16.wgsl",
    "formats/q8_0.wgsl",
    "formats/q4_0.wgsl",
    "formats/q4_1.wgsl",
    "formats/q5_0.wgsl",
    "formats/q5_1.wgsl",
    "formats/iq4_nl.wgsl",
    "formats/bf16.wgsl",
    "formats/q4_k.wgsl",
    "formats/q5_k.wgsl",
    "formats/q6_k.wgsl",
    "formats/sparse.wgsl",
    "formats/sparse_f16.wgsl",
    "formats/sparse_q8_0.wgsl",
    "formats/sparse_q4_0.wgsl",
    "formats/sparse_q4_1.wgsl",
    "ops/embed.wgsl",
    "ops/rmsnorm.wgsl",
    "ops/matvec.wgsl",
    "ops/matvec_rows.wgsl",
    "ops/matmul.wgsl",
    "ops/matmul_rows.wgsl",
    "ops/rope_kv.wgsl",
    "ops/kv_bounds.wgsl",
    "ops/kv_centre.wgsl",
    "ops/kv_gather.wgsl",
    "ops/snap_score.wgsl",
    "ops/kivi_pack.wgsl",
    "ops/quest_select.wgsl",
    "ops/attention.wgsl",
    "ops/attention_rows.wgsl",
    "ops/attention_rows_sg.wgsl",
    "ops/attention_combine.wgsl",
    "ops/swiglu.wgsl",
    "ops/sample.wgsl",
    "ops/sumsq.wgsl",
    "ops/gram.wgsl",
    "ops/layernorm.wgsl",
    "ops/bias_act.wgsl",
    "ops/head_rmsnorm.wgsl",
    "ops/scale.wgsl",
    "ops/encoder_attention.wgsl",
    "ops/mean_pool.wgsl",
    "probe/loads.wgsl",
    "probe/fma.wgsl",
);

/// Looks up an embedded shader file.
///
/// With `LOTTERY_SHADER_DIR` set (kernel development only), a file of that
/// name under the directory replaces the embedded one, so a shader edit needs
/// no rebuild; each file is read once per process.
pub fn source(path: &str) -> Option<&'static str> {
    let embedded = SOURCES.iter().find(|(p, _)| *p == path).map(|(_, s)| *s);
    match std::env::var_os("LOTTERY_SHADER_DIR") {
        Some(dir) => override_source(std::path::Path::new(&dir), path).or(embedded),
        None => embedded,
    }
}

fn override_source(dir: &std::path::Path, path: &str) -> Option<&'static str> {
    use std::sync::{Mutex, OnceLock};
    static READ: OnceLock<Mutex<BTreeMap<String, Option<&'static str>>>> = OnceLock::new();
    let mut read = READ.get_or_init(Default::default).lock().ok()?;
    *read.entry(path.to_string()).or_insert_with(|| {
        let text = std::fs::read_to_string(dir.join(path)).ok()?;
        // Leaked once per file and process: a development aid, never a hot path.
        Some(Box::leak(text.into_boxed_str()))
    })
}

/// Named compile-time values for one shader variant. Ordered so that the
/// variant key (and so the pipeline cache) is deterministic.
pub type Defines = BTreeMap<String, String>;

/// Expands `#include`, `#if` and `{{NAME}}` for `path` under `defines`.
pub fn preprocess(path: &str, defines: &Defines) -> Result<String> {
    let mut out = String::new();
    // Directives must precede everything else in a module.
    if defines.get("NATIVE_F16").is_some_and(|v| v != "0") {
        out.push_str("enable f16;\n");
    }
    let mut seen = BTreeSet::new();
    expand(path, defines, &mut out, &mut seen, 0)?;
    Ok(out)
}

fn expand(
    path: &str,
    defines: &Defines,
    out: &mut String,
    seen: &mut BTreeSet<String>,
    depth: usize,
) -> Result<()> {
    let err = |msg: String| Error::Shader {
        name: path.to_string(),
        msg,
    };
    if depth > 16 {
        return Err(err("#include nested too deeply".into()));
    }
    if !seen.insert(path.to_string()) {
        return Ok(());
    }
    let src = source(path).ok_or_else(|| err("no such embedded shader".into()))?;
    // Stack of (this branch active, some branch already taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.iter().all(|(a, _)| *a);
    for (lineno, line) in src.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#if ") {
            let name = substitute(rest.trim(), defines);
            let on = defines.get(name.as_str()).is_some_and(|v| v != "0");
            stack.push((on, on));
            continue;
        }
        if t.starts_with("#else") {
            let Some(top) = stack.last_mut() else {
                return Err(err(format!("line {}: #else without #if", lineno + 1)));
            };
            *top = (!top.1, true);
            continue;
        }
        if t.starts_with("#endif") {
            if stack.pop().is_none() {
                return Err(err(format!("line {}: #endif without #if", lineno + 1)));
            }
            continue;
        }
        if !active(&stack) {
            continue;
        }
        if let Some(rest) = t.strip_prefix("#include") {
            let inc = substitute(rest.trim().trim_matches('"'), defines);
            expand(&inc, defines, out, seen, depth + 1)?;
            continue;
        }
        let line = substitute(line, defines);
        if line.contains("{{") {
            return Err(err(format!(
                "line {}: undefined placeholder in `{}`",
                lineno + 1,
                line.trim()
            )));
        }
        out.push_str(&line);
        out.push('\n');
    }
    if !stack.is_empty() {
        return Err(err("#if without #endif".into()));
    }
    Ok(())
}

fn substitute(line: &str, defines: &Defines) -> String {
    if !line.contains("{{") {
        return line.to_string();
    }
    let mut s = line.to_string();
    for (k, v) in defines {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_else_and_substitution() {
        let mut d = Defines::new();
        d.insert("FORMAT".into(), "q4_1".into());
        d.insert("ACCUMULATE".into(), "1".into());
        let s = preprocess("ops/matvec.wgsl", &d).unwrap();
        assert!(s.contains("fn fmt_unit"));
        assert!(!s.contains("#if"));
        assert!(!s.contains("{{"));
    }

    #[test]
    fn unknown_file_is_an_error() {
        assert!(preprocess("ops/nope.wgsl", &Defines::new()).is_err());
    }
}
