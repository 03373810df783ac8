//! The lottery runtime (first part): the `Tool` trait, the exact
//! `calculator`, and the inline GSM8K call style: whenever the generated
//! text ends with `<<EXPR=`, the runtime appends `VALUE>>` through the cache
//! and decoding continues, so the model never does the arithmetic itself.
//! Zero cost when the model never writes `<<`.

pub mod calculator;

use crate::generate::{HookAction, TokenEvent};
use serde_json::{json, Value};

/// A tool the model can call: a name, what it does, the JSON Schema of its
/// arguments, and the call itself. Errors are text for the model, not panics.
pub trait Tool {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    fn parameters(&self) -> Value;
    fn call(&self, args: &Value) -> Result<String, String>;
}

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
            "properties": {"expression": {"type": "string", "maxLength": calculator::MAX_EXPR_LEN}},
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
