//! Chat templates: the Jinja template that turns a conversation into the
//! prompt text a chat model was trained on.
//!
//! Rendered with minijinja set up to behave like Hugging Face's
//! `apply_chat_template`: `trim_blocks` and `lstrip_blocks` on, the
//! `raise_exception` function, a `tojson` filter that writes what Python's
//! `json.dumps` writes, and Python string/dict methods (`.strip()`,
//! `.startswith()`, `.items()`, ...) from minijinja-contrib's pycompat.
//!
//! A template comes from the model file, so it is untrusted code. Every
//! render runs on a fuel budget (minijinja 3 charges one unit per
//! instruction and one per 64 bytes of data a template creates, so the
//! budget bounds both time and memory) and an output limit; either one
//! ending a render is an error naming the template and the limit, instead of
//! a hang or an out-of-memory kill.

use std::io::Write;
use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{context, Environment, ErrorKind, State, Value};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::load::gguf::GgufFile;
use crate::load::tokenizer::config_token;

const TEMPLATE_NAME: &str = "chat";

/// Stack of the thread a render runs on: the fuel allows about 170,000
/// levels of nesting (each costs a loop iteration of about 6 units), and
/// dropping one level takes under 300 bytes of stack.
#[cfg(not(target_arch = "wasm32"))]
const RENDER_STACK_BYTES: usize = 256 << 20;

/// What one render may spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateLimits {
    /// minijinja fuel: about one unit per instruction and one per 64 bytes
    /// of data created, so it bounds time and memory together.
    pub fuel: u64,
    /// Largest rendered prompt, in bytes.
    pub max_output_bytes: usize,
}

impl Default for TemplateLimits {
    /// The real templates in `models/tests/templates/` render 40-turn
    /// conversations on a twentieth of this budget; the hostile templates
    /// in the tests stop within about a third of a second and about 120 MB
    /// (the fuel also pays for data at one unit per 64 bytes). A 16 MiB
    /// prompt is past every context we run.
    fn default() -> Self {
        TemplateLimits {
            fuel: 1_000_000,
            max_output_bytes: 16 << 20,
        }
    }
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `"system"`, `"user"`, `"assistant"` (or whatever the template knows).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template plus the special-token strings it may refer to.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    /// Where the template came from, for errors (a GGUF key or a file).
    origin: String,
    limits: TemplateLimits,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("origin", &self.origin)
            .field("limits", &self.limits)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; syntax errors are reported here, not at render time.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        Self::with_origin(
            source.into(),
            "the chat template".into(),
            bos_token,
            eos_token,
        )
    }

    fn with_origin(
        source: String,
        origin: String,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let limits = TemplateLimits::default();
        let mut env = environment();
        env.set_fuel(Some(limits.fuel));
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| Error::Template(format!("{origin}: compiling: {e:#}")))?;
        Ok(ChatTemplate {
            env,
            source,
            origin,
            limits,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Replaces the render limits (see [`TemplateLimits::default`]).
    pub fn with_limits(mut self, limits: TemplateLimits) -> Self {
        self.env.set_fuel(Some(limits.fuel));
        self.limits = limits;
        self
    }

    /// The limits each render runs under.
    pub fn limits(&self) -> TemplateLimits {
        self.limits
    }

    /// The template in `tokenizer.chat_template`, with `bos_token` /
    /// `eos_token` taken from the vocabulary at `tokenizer.ggml.bos_token_id` /
    /// `eos_token_id` (empty strings when absent).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let source = gguf.get_str("tokenizer.chat_template")?;
        let token = |key: &str| -> Result<String> {
            let Some(id) = gguf.opt_u32(key)? else {
                return Ok(String::new());
            };
            let tokens = gguf.get_array("tokenizer.ggml.tokens")?;
            tokens
                .get(id as usize)
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::Template(format!(
                        "{key} = {id} does not name a string in tokenizer.ggml.tokens ({} entries)",
                        tokens.len()
                    ))
                })
        };
        let bos = token("tokenizer.ggml.bos_token_id")?;
        let eos = token("tokenizer.ggml.eos_token_id")?;
        Self::with_origin(
            source.to_string(),
            "tokenizer.chat_template".into(),
            bos,
            eos,
        )
    }

    /// The `chat_template` of a Hugging Face `tokenizer_config.json` (a
    /// string, or a list of `{name, template}` from which `"default"` is used).
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Template(format!("parsing {}: {e}", path.display())))?;
        let source = match json.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::Template(format!(
                        "{}: chat_template list has no entry named \"default\"",
                        path.display()
                    ))
                })?,
            _ => {
                return Err(Error::Template(format!(
                    "{}: no \"chat_template\" string",
                    path.display()
                )))
            }
        };
        let token = |key: &str| config_token(&json, key).unwrap_or_default();
        let origin = format!("{} chat_template", path.display());
        Self::with_origin(source, origin, token("bos_token"), token("eos_token"))
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with
    /// the header of the assistant's next turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, Value::UNDEFINED)
    }

    /// Like [`ChatTemplate::render`], with extra template variables (e.g.
    /// `tools`, `documents`) from a serialisable map.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: impl Serialize,
    ) -> Result<String> {
        let extra = Value::from(minijinja::value::Serde(extra));
        let ctx = context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            ..extra
        };
        // A template can nest a list a hundred thousand deep within its
        // fuel, and minijinja drops nested values recursively: on a thread's
        // usual stack that overflowed and aborted the process (found by the
        // fuzzer). Natively the render gets a thread with a stack deep
        // enough for any nesting the fuel allows (reserved, not committed).
        #[cfg(not(target_arch = "wasm32"))]
        {
            std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .name("chat-template".into())
                    .stack_size(RENDER_STACK_BYTES)
                    .spawn_scoped(scope, || self.render_ctx(ctx))
                    .map_err(|e| {
                        Error::Template(format!("{}: starting the render: {e}", self.origin))
                    })?
                    .join()
                    .map_err(|_| Error::Template(format!("{}: the render panicked", self.origin)))?
            })
        }
        #[cfg(target_arch = "wasm32")]
        self.render_ctx(ctx)
    }

    fn render_ctx(&self, ctx: Value) -> Result<String> {
        let origin = &self.origin;
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Template(format!("{origin}: {e:#}")))?;
        let mut out = BoundedWriter {
            buf: Vec::new(),
            limit: self.limits.max_output_bytes,
            overflowed: false,
        };
        let result = tmpl.render_captured_to(ctx, &mut out);
        if out.overflowed {
            return Err(Error::Template(format!(
                "{origin}: the rendered prompt passed the output limit of {} bytes",
                self.limits.max_output_bytes
            )));
        }
        match result {
            Ok(_) => String::from_utf8(out.buf)
                .map_err(|_| Error::Template(format!("{origin}: rendered text is not UTF-8"))),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Error::Template(format!(
                "{origin}: rendering stopped at the fuel limit of {} units (instructions plus \
                 64-byte units of data created); the template does more work than a chat \
                 prompt needs",
                self.limits.fuel
            ))),
            Err(e) => Err(Error::Template(format!("{origin}: rendering: {e:#}"))),
        }
    }
}

/// Collects the output and refuses to grow past `limit` bytes.
struct BoundedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // transformers compiles chat templates with these two on.
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters with trim/lstrip are a valid syntax"),
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, state, value| {
        charge_items(state, value)?;
        minijinja::escape_formatter(out, state, value)
    });
    env.add_function("raise_exception", raise_exception);
    // minijinja's own tojson escapes <, >, & and ' for HTML safety, which
    // would change prompts that embed JSON (tool schemas).
    env.add_filter("tojson", tojson);
    env
}

/// Charges one unit of fuel per item of a container before it is written
/// out or serialised. minijinja's display of a list visits every item even
/// after the output limit has refused the writes, and a lazily repeated list
/// (`tools * 50000000`) costs nothing to make: without this, printing one
/// took 13 s. An explicit stack, so deep nesting cannot overflow ours.
fn charge_items(state: &State, value: &Value) -> std::result::Result<(), minijinja::Error> {
    let mut stack = vec![value.clone()];
    while let Some(v) = stack.pop() {
        let kind = v.kind();
        if !matches!(kind, ValueKind::Seq | ValueKind::Iterable | ValueKind::Map) {
            continue;
        }
        let sized = v.len();
        if let Some(n) = sized {
            state.consume_fuel(n as u64)?;
        }
        for item in v.try_iter()? {
            if sized.is_none() {
                state.consume_fuel(1)?;
            }
            if kind == ValueKind::Map {
                stack.push(v.get_item(&item)?);
            }
            stack.push(item);
        }
    }
    Ok(())
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False,
/// indent=indent, sort_keys=sort_keys)`, byte for byte.
fn tojson(
    state: &State,
    value: &Value,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    charge_items(state, value)?;
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    if indent.is_some_and(|n| n > MAX_TOJSON_INDENT) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: indent is limited to {MAX_TOJSON_INDENT}"),
        ));
    }
    let opts = JsonOpts {
        indent,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_py_json(&mut out, value, &opts, 0)?;
    Ok(Value::from_safe_string(out))
}

/// Python allows any indent; a template from a file must not make us
/// allocate gigabytes of spaces.
const MAX_TOJSON_INDENT: usize = 64;
/// `tojson` output is charged as fuel only once returned, so its size is
/// checked while it is written.
const MAX_TOJSON_BYTES: usize = 16 << 20;

struct JsonOpts {
    indent: Option<usize>,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn write_py_json(
    out: &mut String,
    v: &Value,
    opts: &JsonOpts,
    level: usize,
) -> std::result::Result<(), minijinja::Error> {
    if out.len() > MAX_TOJSON_BYTES {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: output passed {MAX_TOJSON_BYTES} bytes"),
        ));
    }
    match v.kind() {
        ValueKind::Undefined => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: value is undefined",
            ))
        }
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                let f = f64::try_from(v.clone())?;
                out.push_str(&py_float_repr(f));
            }
        }
        ValueKind::String => {
            let s = v.as_str().unwrap_or("");
            // An escaped character takes at most 12 bytes (a surrogate pair).
            if out.len().saturating_add(s.len().saturating_mul(12)) > MAX_TOJSON_BYTES
                && out.len() + escaped_len(s, opts.ensure_ascii) > MAX_TOJSON_BYTES
            {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: output passed {MAX_TOJSON_BYTES} bytes"),
                ));
            }
            write_py_str(out, s, opts.ensure_ascii)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, '[', ']', &items, opts, level, |out, item, lvl| {
                write_py_json(out, item, opts, lvl)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if opts.sort_keys {
                keys.sort();
            }
            let mut pairs = Vec::with_capacity(keys.len());
            for k in keys {
                let item = v.get_item(&k)?;
                pairs.push((k, item));
            }
            write_container(out, '{', '}', &pairs, opts, level, |out, (k, item), lvl| {
                // Python's json turns non-string keys into their JSON text.
                match k.as_str() {
                    Some(s) => write_py_str(out, s, opts.ensure_ascii),
                    None => {
                        let mut key = String::new();
                        write_py_json(&mut key, k, opts, lvl)?;
                        write_py_str(out, &key, opts.ensure_ascii);
                    }
                }
                out.push_str(": ");
                write_py_json(out, item, opts, lvl)
            })?;
        }
        _ => write_py_str(out, &v.to_string(), opts.ensure_ascii),
    }
    Ok(())
}

fn write_container<T>(
    out: &mut String,
    open: char,
    close: char,
    items: &[T],
    opts: &JsonOpts,
    level: usize,
    mut each: impl FnMut(&mut String, &T, usize) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        match opts.indent {
            // With an indent Python's item separator is "," + newline.
            Some(n) => {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(&" ".repeat(n * (level + 1)));
            }
            None => {
                if i > 0 {
                    out.push_str(", ");
                }
            }
        }
        each(out, item, level + 1)?;
    }
    if let Some(n) = opts.indent {
        out.push('\n');
        out.push_str(&" ".repeat(n * level));
    }
    out.push(close);
    Ok(())
}

/// Bytes `write_py_str` writes for `s` (quotes included).
fn escaped_len(s: &str, ensure_ascii: bool) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0C}' => 2,
            c if (c as u32) < 0x20 => 6,
            c if ensure_ascii && !c.is_ascii() => 6 * c.len_utf16(),
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

fn write_py_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form when
/// the decimal exponent is < -4 or >= 16, always a `.0` on integral values.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{f:e}"); // e.g. "1.5e-5", shortest digits
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if f != 0.0 && !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
    let plain = format!("{f}");
    if plain.contains('.') {
        plain
    } else {
        format!("{plain}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123.456, "123.456"),
            (1e100, "1e+100"),
        ] {
            assert_eq!(py_float_repr(f), want, "{f}");
        }
    }
}
