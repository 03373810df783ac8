//! The lottery runtime (first part): the `Tool` trait and the built-in
//! tools (`calculator`, `memory`, and on the embedding model `search` and
//! `prompt_search`), and the inline GSM8K call style: whenever the generated
//! text ends with `<<EXPR=`, the runtime appends `VALUE>>` through the cache
//! and decoding continues, so the model never does the arithmetic itself.
//! Zero cost when the model never writes `<<`.

pub mod calculator;
#[cfg(not(target_arch = "wasm32"))]
pub mod retrieval;
pub mod solve;

use crate::generate::{HookAction, TokenEvent};
use serde_json::{json, Value};

/// A tool the model can call: a name, what it does, the JSON Schema of its
/// arguments, and the call itself. Errors are text for the model, not panics.
pub trait Tool {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    fn parameters(&self) -> Value;
    fn call(&self, args: &Value) -> Result<String, String>;
    /// A check of a proposed answer to `task` by this tool: `Some((arguments,
    /// result))` when the tool has something the model has not seen about
    /// what the answer says (a document that says more about a name the
    /// answer gives), shown to the model as that call and its result before
    /// the answer is accepted. The paper's verification by a tool; most
    /// tools have nothing to add.
    fn check_answer(&self, _task: &str, _answer: &str) -> Option<(Value, String)> {
        None
    }
    /// Whether `task` is this tool's to answer first: it names exactly
    /// something the tool holds (a knowledge base with a passage on the
    /// entity the question is about), or asks for what the tool does (the
    /// calculator, for an operation spelled out on numbers):
    /// then the loop does not offer the answer until a call of such a tool
    /// has returned. The model still chooses the tool and writes the call;
    /// it only cannot answer from its own memory what a source at hand
    /// knows (a small model confidently invents).
    fn relevant_to(&self, _task: &str) -> bool {
        false
    }
}

/// The expressions the calculator's schema admits: numbers (one decimal
/// point at most) joined by operators, parentheses around them. Looser
/// than the calculator (which reports unbalanced parentheses), tight
/// enough that a constrained model cannot degenerate into `1.1.1.1...`.
pub const EXPRESSION_PATTERN: &str =
    r"^[(]*-?[0-9]+([.][0-9]+)?[)]*( *[-+*/^] *[(]*-?[0-9]+([.][0-9]+)?[)]*)*$";

/// Exact rational arithmetic (see [`calculator`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Calculator;

impl Tool for Calculator {
    fn name(&self) -> &str {
        "calculator"
    }
    fn description(&self) -> &str {
        "Evaluates an arithmetic expression exactly: + - * / ^, parentheses, decimals."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            // The language the calculator reads, so a constrained caller
            // can only write an expression it accepts.
            "properties": {"expression": {
                "type": "string",
                "maxLength": calculator::MAX_EXPR_LEN,
                "pattern": EXPRESSION_PATTERN
            }},
            "required": ["expression"],
            "additionalProperties": false
        })
    }
    fn call(&self, args: &Value) -> Result<String, String> {
        let expr = args["expression"]
            .as_str()
            .ok_or_else(|| "calculator: `expression` must be a string".to_string())?;
        calculator::evaluate(expr)
            .map(|v| v.to_string())
            .map_err(|e| format!("calculator: {e}"))
    }
    /// A task that spells out an operation on numbers ("347 times 29",
    /// "12.5 + 3", "the product of 18 and 7"): exact arithmetic is the
    /// calculator's, and the 135M model, left to choose, answered such a
    /// question at once with a number of its own.
    fn relevant_to(&self, task: &str) -> bool {
        states_an_operation(task)
    }
}

/// Whether `text` holds `NUMBER OPERATOR NUMBER` (an operator symbol or
/// word: + - * / x × ÷ ^, plus, minus, times, "divided by", "multiplied
/// by", "to the power of") or "(the) sum/product/difference/quotient of
/// NUMBER and NUMBER".
pub fn states_an_operation(text: &str) -> bool {
    // Tokens: numbers (digits with inner . or ,), words (lower-cased),
    // and single symbols; each with whether white space came before it.
    // Digits glued to letters ("75c09e96", "A7") are no number.
    let mut toks: Vec<(bool, String, bool)> = Vec::new();
    let mut chars = text.chars().peekable();
    let mut space = true;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut n = c.to_string();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || ((d == '.' || d == ',') && n.len() < 40) {
                    n.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            let glued_before = toks
                .last()
                .is_some_and(|t| !t.0 && !space && t.1.chars().all(char::is_alphabetic));
            let glued_after = chars.peek().is_some_and(|d| d.is_alphabetic());
            toks.push((!glued_before && !glued_after, n, space));
        } else if c.is_alphabetic() {
            let mut w = c.to_lowercase().to_string();
            while let Some(&d) = chars.peek() {
                if d.is_alphabetic() {
                    w.extend(d.to_lowercase());
                    chars.next();
                } else {
                    break;
                }
            }
            toks.push((false, w, space));
        } else if !c.is_whitespace() {
            toks.push((false, c.to_string(), space));
        }
        space = c.is_whitespace();
    }
    let spaced = |i: usize| toks.get(i).is_some_and(|t| t.2);
    let is_num = |i: usize| toks.get(i).is_some_and(|t| t.0);
    let word = |i: usize| toks.get(i).map(|t| t.1.as_str()).unwrap_or("");
    // Operators as token sequences.
    const OPS: [&[&str]; 14] = [
        &["+"],
        &["-"],
        &["*"],
        &["/"],
        &["x"],
        &["×"],
        &["÷"],
        &["^"],
        &["plus"],
        &["minus"],
        &["times"],
        &["divided", "by"],
        &["multiplied", "by"],
        &["to", "the", "power", "of"],
    ];
    for i in 0..toks.len() {
        if is_num(i) {
            for op in OPS {
                let j = i + 1 + op.len();
                // "-" and "/" also join dates, codes and phone numbers:
                // as operators they stand apart.
                let apart = !matches!(op[0], "-" | "/") || (spaced(i + 1) && spaced(j));
                if op.iter().enumerate().all(|(k, w)| word(i + 1 + k) == *w) && is_num(j) && apart {
                    return true;
                }
            }
        }
        if matches!(word(i), "sum" | "product" | "difference" | "quotient")
            && word(i + 1) == "of"
            && is_num(i + 2)
            && word(i + 3) == "and"
            && is_num(i + 4)
        {
            return true;
        }
    }
    false
}

/// Named values that persist across the steps of one task (`set`, `get`,
/// `list`, `delete`), bounded so a runaway model cannot fill memory.
#[derive(Debug, Default)]
pub struct Memory {
    values: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

/// Entries a [`Memory`] holds at most, and the longest name and value.
pub const MEMORY_MAX_ENTRIES: usize = 1024;
pub const MEMORY_MAX_NAME: usize = 128;
pub const MEMORY_MAX_VALUE: usize = 65_536;

impl Memory {
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.lock().ok()?.get(name).cloned()
    }
}

impl Tool for Memory {
    fn name(&self) -> &str {
        "memory"
    }
    fn description(&self) -> &str {
        "Stores and recalls named values for this task: set, get, list, delete."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "action": {"enum": ["set", "get", "list", "delete"]},
                "name": {"type": "string", "maxLength": MEMORY_MAX_NAME},
                "value": {"type": "string", "maxLength": MEMORY_MAX_VALUE}
            },
            "required": ["action"],
            "additionalProperties": false
        })
    }
    fn call(&self, args: &Value) -> Result<String, String> {
        let mut m = self
            .values
            .lock()
            .map_err(|_| "memory: poisoned by an earlier panic".to_string())?;
        let name = || -> Result<&str, String> {
            let n = args["name"]
                .as_str()
                .ok_or_else(|| "memory: `name` must be a string".to_string())?;
            if n.is_empty() || n.len() > MEMORY_MAX_NAME {
                return Err(format!("memory: a name has 1 to {MEMORY_MAX_NAME} bytes"));
            }
            Ok(n)
        };
        match args["action"].as_str() {
            Some("set") => {
                let n = name()?;
                let v = match &args["value"] {
                    Value::String(s) => s.clone(),
                    Value::Null => return Err("memory: `set` needs a `value`".into()),
                    other => other.to_string(),
                };
                if v.len() > MEMORY_MAX_VALUE {
                    return Err(format!(
                        "memory: values are at most {MEMORY_MAX_VALUE} bytes"
                    ));
                }
                if !m.contains_key(n) && m.len() >= MEMORY_MAX_ENTRIES {
                    return Err(format!("memory: full ({MEMORY_MAX_ENTRIES} entries)"));
                }
                m.insert(n.to_string(), v);
                Ok(format!("stored {n}"))
            }
            Some("get") => {
                let n = name()?;
                m.get(n)
                    .cloned()
                    .ok_or_else(|| format!("memory: nothing stored under `{n}`"))
            }
            Some("delete") => {
                let n = name()?;
                m.remove(n)
                    .map(|_| format!("deleted {n}"))
                    .ok_or_else(|| format!("memory: nothing stored under `{n}`"))
            }
            Some("list") => Ok(if m.is_empty() {
                "(empty)".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
            _ => Err("memory: `action` must be set, get, list or delete".into()),
        }
    }
}

/// One inline call the runtime answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineCall {
    pub expression: String,
    /// The inserted value, or the error (nothing is inserted then).
    pub result: Result<String, String>,
}

/// The expression of an inline call the text has just opened: the text ends
/// with `<<EXPR=` and EXPR holds only digits, `+ - * / ( ) . ^` and spaces.
pub fn pending_inline_call(text: &str) -> Option<&str> {
    let body = text.strip_suffix('=')?;
    let open = body.rfind("<<")?;
    let expr = &body[open + 2..];
    let ok = !expr.trim().is_empty()
        && expr.len() <= calculator::MAX_EXPR_LEN
        && expr
            .bytes()
            .all(|c| c.is_ascii_digit() || b"+-*/().^ ".contains(&c));
    ok.then_some(expr)
}

/// A generation hook that answers inline calculator calls: on `<<EXPR=` it
/// injects `VALUE>>`; an expression without a value (division by zero,
/// overflow) injects nothing, so the model continues on its own, and the
/// error is recorded in `calls`.
pub fn inline_calculator<'a>(
    calls: &'a mut Vec<InlineCall>,
    mut on_token: impl FnMut(&TokenEvent) -> bool + 'a,
) -> impl FnMut(&TokenEvent) -> HookAction + 'a {
    move |e: &TokenEvent| {
        if !on_token(e) {
            return HookAction::Stop;
        }
        if e.injected {
            return HookAction::Continue;
        }
        let Some(expr) = pending_inline_call(e.text) else {
            return HookAction::Continue;
        };
        let result = calculator::evaluate(expr)
            .map(|v| v.to_string())
            .map_err(|err| err.to_string());
        calls.push(InlineCall {
            expression: expr.to_string(),
            result: result.clone(),
        });
        match result {
            Ok(v) => HookAction::Inject(format!("{v}>>")),
            Err(_) => HookAction::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_on_numbers_are_recognised() {
        for t in [
            "What is 347 times 29?",
            "Answer the question.\n\nQuestion: What is 12.5 + 3?\nAnswer:",
            "compute 7 x 8",
            "What is 90 - 17?",
            "What is the product of 18 and 7?",
            "How much is 1,200 divided by 4?",
            "2 to the power of 10",
        ] {
            assert!(states_an_operation(t), "{t}");
        }
        for t in [
            "What is the capital of France?",
            "In what year was the Zegir Bridge opened?",
            "What is the value of key 75c09e96-01d5-4f56?",
            "Call 555 0142 after 9",
            "A shop has 12 crates.",
            "born 2020-01-22 or 3/4/2021",
            "Harbor-Lights 4: phone 555-0142",
            "unit A7 x 8",
        ] {
            assert!(!states_an_operation(t), "{t}");
        }
    }

    #[test]
    fn inline_calls_are_recognised_only_when_complete_and_plain() {
        assert_eq!(pending_inline_call("A: <<347*29="), Some("347*29"));
        assert_eq!(pending_inline_call("x <<(2 + 3) / 4="), Some("(2 + 3) / 4"));
        assert_eq!(pending_inline_call("A: <<347*29"), None);
        assert_eq!(pending_inline_call("a = b"), None);
        assert_eq!(pending_inline_call("<<x=3="), None);
        assert_eq!(pending_inline_call("<<="), None);
        assert_eq!(pending_inline_call("<<1+1=2>> then 5="), None);
    }

    #[test]
    fn memory_sets_gets_lists_and_refuses_bad_calls() {
        let m = Memory::default();
        assert_eq!(m.call(&json!({"action": "list"})), Ok("(empty)".into()));
        assert_eq!(
            m.call(&json!({"action": "set", "name": "x", "value": "42"})),
            Ok("stored x".into())
        );
        assert_eq!(
            m.call(&json!({"action": "set", "name": "y", "value": 7})),
            Ok("stored y".into())
        );
        assert_eq!(
            m.call(&json!({"action": "get", "name": "x"})),
            Ok("42".into())
        );
        assert_eq!(
            m.call(&json!({"action": "list"})),
            Ok("x = 42\ny = 7".into())
        );
        assert_eq!(
            m.call(&json!({"action": "delete", "name": "y"})),
            Ok("deleted y".into())
        );
        assert!(m
            .call(&json!({"action": "get", "name": "y"}))
            .unwrap_err()
            .contains("nothing stored"));
        assert!(m
            .call(&json!({"action": "set", "name": "z"}))
            .unwrap_err()
            .contains("needs a `value`"));
        assert!(m
            .call(&json!({"action": "jump"}))
            .unwrap_err()
            .contains("must be set"));
        let big = "v".repeat(MEMORY_MAX_VALUE + 1);
        assert!(m
            .call(&json!({"action": "set", "name": "b", "value": big}))
            .unwrap_err()
            .contains("at most"));
        for i in 0..MEMORY_MAX_ENTRIES - 1 {
            m.call(&json!({"action": "set", "name": format!("k{i}"), "value": "1"}))
                .unwrap();
        }
        assert!(m
            .call(&json!({"action": "set", "name": "one-too-many", "value": "1"}))
            .unwrap_err()
            .contains("full"));
        assert_eq!(m.get("x").as_deref(), Some("42"));
    }

    #[test]
    fn calculator_tool_reports_errors_as_text() {
        let c = Calculator;
        assert_eq!(c.call(&json!({"expression": "6*7"})), Ok("42".into()));
        assert!(c
            .call(&json!({"expression": "1/0"}))
            .unwrap_err()
            .contains("division by zero"));
        assert!(c
            .call(&json!({"expr": "1"}))
            .unwrap_err()
            .contains("must be a string"));
        assert_eq!(c.parameters()["required"][0], "expression");
    }
}
