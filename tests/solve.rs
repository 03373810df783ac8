//! The runtime's loop on the real model: the model chooses a calculator
//! call under the action grammar, the runtime runs it, and the model answers
//! with the exact result (135M alone gets 3-digit multiplication 0/25).

mod common;
use lottery::models::runtime::solve::{
    action_schema, demonstrations, parse_action, solve, Action, SolveOptions,
};
use lottery::models::runtime::{calculator, Calculator, Memory, Tool};
use lottery::{Session, SessionOptions};

#[test]
fn the_model_calls_the_calculator_and_answers_with_its_result() {
    let model = common::load_model();
    let mut s = Session::new(
        model.clone(),
        SessionOptions {
            ctx: 1024,
            ..Default::default()
        },
    )
    .unwrap();
    let (calc, mem) = (Calculator, Memory::default());
    let tools: Vec<&dyn Tool> = vec![&calc, &mem];
    let sol = solve(
        &mut s,
        &tools,
        "What is 347 times 29?",
        None,
        &SolveOptions::default(),
    )
    .unwrap();
    let first = &sol.trace[0];
    assert_eq!(first.kind, "call", "{:#?}", sol.trace);
    assert_eq!(first.tool.as_deref(), Some("calculator"));
    let expr = first.arguments["expression"].as_str().unwrap();
    assert_eq!(
        first.result.as_deref(),
        Some(calculator::evaluate(expr).unwrap().to_string().as_str())
    );
    assert_eq!(first.result.as_deref(), Some("10063"), "{expr}");
    let answer = sol.answer.expect("an answer within the budget");
    assert!(answer.contains("10063"), "{answer:?}: {:#?}", sol.trace);
    assert!(sol.trace.len() <= 2 + SolveOptions::default().max_calls);
}

/// The action grammar admits each tool's arguments and an answer, with
/// every string capped.
#[test]
fn action_schema_lists_the_tools_and_the_answer() {
    let (calc, mem) = (Calculator, Memory::default());
    let tools: Vec<&dyn Tool> = vec![&calc, &mem];
    let v = action_schema(&tools, true, 50);
    let any = v["anyOf"].as_array().unwrap();
    let names: Vec<&str> = any
        .iter()
        .map(|a| a["properties"]["tool"]["const"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calculator", "memory", "answer"]);
    let text = v.to_string();
    assert!(
        !text.contains("\"maxLength\":65536"),
        "memory's value is capped: {text}"
    );
    assert!(text.contains("\"maxLength\":50"));
    let only = action_schema(&tools, false, 50);
    assert_eq!(only["anyOf"].as_array().unwrap().len(), 1);
}

/// The worked examples hold only the tools given, and every action in them
/// is one the grammar spells (compact JSON, `", "` and `": "`).
#[test]
fn demonstrations_use_only_the_given_tools() {
    struct Named(&'static str);
    impl Tool for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn description(&self) -> &str {
            "test"
        }
        fn parameters(&self) -> serde_json::Value {
            serde_json::json!({"type": "object"})
        }
        fn call(&self, _: &serde_json::Value) -> Result<String, String> {
            Ok(String::new())
        }
    }
    let (calc, search) = (Calculator, Named("search"));
    let tools: Vec<&dyn Tool> = vec![&calc, &search];
    let demo = demonstrations(&tools);
    assert!(!demo.is_empty());
    for m in demo.iter().filter(|m| m.role == "assistant") {
        match parse_action(&m.content).unwrap() {
            Action::Call { tool, .. } => assert_eq!(tool, "search"),
            Action::Answer { .. } => {}
        }
        assert!(m.content.starts_with("{\"tool\": \""), "{}", m.content);
    }
    assert!(demonstrations(&[]).is_empty());
    assert!(demonstrations(&[&calc as &dyn Tool]).is_empty());
    let v = action_schema(&tools, true, 50);
    assert_eq!(v["x-guidance"]["whitespace_flexible"], false);
}
