//! The loop (the paper's Algorithm 1, first version): the model is shown the
//! tools and the question and, at every step, writes one action as JSON
//! under a grammar that only admits well-formed calls of the given tools or
//! an answer, so the model, not the runtime, chooses what to do next among
//! few valid options. The runtime runs the call, shows the result as the next
//! turn, and goes on within a budget of steps; after the answer, an optional
//! check by the model (a constrained yes/no) can send it back to the last
//! good point to try again (sampled this time). Every turn is rendered
//! through the model's chat template and fed with `rewind_to_prefix`, so the
//! cache is reused and the prompt never re-runs. Nothing here knows which
//! task it is solving.

use super::Tool;
use crate::constrain::Grammar;
use crate::generate::{GenerateOptions, HookAction, SamplerSettings, Session};
use crate::load::ChatMessage;
use crate::{Error, Result};
use serde_json::{json, Value};
use web_time::Instant;

/// Budgets and choices of the loop.
#[derive(Clone, Debug)]
pub struct SolveOptions {
    /// Tool calls before only an answer is allowed (a chain of lookups
    /// takes one a link).
    pub max_calls: usize,
    /// Tokens the model may spend on one action.
    pub max_action_tokens: usize,
    /// Longest string the grammar lets the model write in an argument.
    pub max_arg_chars: u64,
    /// Tool results are clipped to this many characters before the model sees them.
    pub max_result_chars: usize,
    /// Once a tool result has been shown, the answer's text is written by
    /// the reader: the model continuing `{last result}\n\nQuestion:
    /// {task}\nAnswer:` as plain text, the reading-comprehension form it
    /// was trained on (the JSON action only decides that it is time to
    /// answer). On invented facts the 135M model picks the asked-for value
    /// from a passage far more often so than inside a JSON string.
    pub reader: bool,
    /// Answers a tool may check ([`Tool::check_answer`]) before one is
    /// accepted as it stands.
    pub max_checks: usize,
    /// Ask the model to check its answer; a "no" retries from before it.
    pub verify: bool,
    /// Answers retried after a failed check.
    pub retries: usize,
    /// Context of at most this many tokens (the model's) is shown to the
    /// model whole; longer context is only reachable through `prompt_search`.
    /// A small model reads a short text well and loses a fact in a long one.
    pub inline_context_tokens: usize,
    /// While the task's document is hidden (longer than
    /// `inline_context_tokens`) and no `prompt_search` call has returned,
    /// or a tool holds something the task names ([`Tool::relevant_to`])
    /// and has not been called, the actions are calls of those sources
    /// only: a question about a source at hand cannot be answered before
    /// reading it (a small model otherwise guesses at once, or reaches for
    /// the calculator with digits from a key).
    pub read_before_answer: bool,
    /// Show the model worked examples of the action format first (one per
    /// kind of tool given): a small model copies a format it has seen far
    /// better than it follows a description of it.
    pub demonstrations: bool,
    pub seed: u64,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            max_calls: 6,
            max_action_tokens: 96,
            max_arg_chars: 120,
            max_result_chars: 600,
            reader: true,
            max_checks: 6,
            verify: false,
            retries: 1,
            inline_context_tokens: 256,
            read_before_answer: true,
            demonstrations: true,
            seed: 0,
        }
    }
}

/// One step of a trace: a tool call, an answer, or a check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TraceStep {
    /// "call", "check_call" (a tool's check of a proposed answer, shown to
    /// the model as a call of it: the proposed answer is in `text`),
    /// "answer", "check", "repeat" (a call already made: not run
    /// again, the answer is asked for next) or "invalid" (the action did not
    /// finish within its token budget).
    pub kind: String,
    pub tool: Option<String>,
    pub arguments: Value,
    pub result: Option<String>,
    pub error: Option<String>,
    /// What the model wrote.
    pub text: String,
    pub tokens: usize,
    pub seconds: f64,
}

/// What [`solve`] returns.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Solution {
    /// The final answer (None: the budget ran out first).
    pub answer: Option<String>,
    pub trace: Vec<TraceStep>,
    pub tokens: usize,
    pub seconds: f64,
}

/// One action as the model wrote it.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `{"tool": "answer", "arguments": {"text": ...}}`.
    Answer { text: String, arguments: Value },
    /// Any other tool name (possibly one no tool has: [`run_call`] says so).
    Call { tool: String, arguments: Value },
}

/// Longest action text read. The grammar bounds what the model writes; a
/// caller passing text from elsewhere gets an error past this.
pub const MAX_ACTION_BYTES: usize = 1 << 20;

/// Reads an action. The grammar makes actions well formed, but one can be
/// cut off by its token budget, and action text from another source is
/// untrusted: anything that is not JSON is an error, never a panic; a
/// missing or non-string `tool` is a call of the tool named "", which
/// [`run_call`] answers with an error for the model.
pub fn parse_action(text: &str) -> std::result::Result<Action, String> {
    if text.len() > MAX_ACTION_BYTES {
        return Err(format!(
            "action of {} bytes, over the limit of {MAX_ACTION_BYTES}",
            text.len()
        ));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("action is not JSON: {e}"))?;
    let tool = v["tool"].as_str().unwrap_or("").to_string();
    let arguments = v["arguments"].clone();
    Ok(if tool == "answer" {
        let text = arguments["text"].as_str().unwrap_or("").to_string();
        Action::Answer { text, arguments }
    } else {
        Action::Call { tool, arguments }
    })
}

/// Runs the call `name(args)` on the tool of that name; every failure
/// (unknown tool, bad arguments, the tool's own error) is text for the model.
pub fn run_call(
    tools: &[&dyn Tool],
    name: &str,
    args: &Value,
) -> std::result::Result<String, String> {
    match tools.iter().find(|t| t.name() == name) {
        Some(t) => t.call(args),
        None => Err(format!("no tool named `{name}`")),
    }
}

/// Caps every string's `maxLength` in a JSON Schema at `max`, so a tool's
/// generous limit cannot let a small model ramble inside an argument.
fn clamp_strings(v: &mut Value, max: u64) {
    match v {
        Value::Object(m) => {
            if m.get("type").and_then(Value::as_str) == Some("string") {
                let cur = m
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX);
                m.insert("maxLength".into(), json!(cur.min(max)));
            }
            for (_, x) in m.iter_mut() {
                clamp_strings(x, max);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| clamp_strings(x, max)),
        _ => {}
    }
}

/// The grammar of one action: a call of one of `tools` with its arguments'
/// schema, or (always) `{"tool": "answer", "arguments": {"text": ...}}`.
pub fn action_schema(tools: &[&dyn Tool], allow_calls: bool, max_arg_chars: u64) -> Value {
    actions(tools, allow_calls, true, max_arg_chars)
}

/// [`action_schema`] with the answer left out when `allow_answer` is false
/// (a document not yet read; see [`SolveOptions::read_before_answer`]).
fn actions(
    tools: &[&dyn Tool],
    allow_calls: bool,
    allow_answer: bool,
    max_arg_chars: u64,
) -> Value {
    let allow_answer = allow_answer || !allow_calls || tools.is_empty();
    let mut any = Vec::new();
    if allow_calls {
        for t in tools {
            let mut params = t.parameters();
            clamp_strings(&mut params, max_arg_chars);
            any.push(json!({
                "type": "object",
                "properties": {"tool": {"const": t.name()}, "arguments": params},
                "required": ["tool", "arguments"],
                "additionalProperties": false
            }));
        }
    }
    if allow_answer {
        any.push(json!({
            "type": "object",
            "properties": {
                "tool": {"const": "answer"},
                "arguments": {
                    "type": "object",
                    "properties": {"text": {"type": "string", "maxLength": max_arg_chars}},
                    "required": ["text"],
                    "additionalProperties": false
                }
            },
            "required": ["tool", "arguments"],
            "additionalProperties": false
        }));
    }
    json!({
        "anyOf": any,
        // One spelling of every action, the one the demonstrations use: no
        // tokens spent on layout, and nothing for the model to vary.
        "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}
    })
}

/// What the model is told when the document is only reachable by search.
const DOCUMENT_NOT_SHOWN: &str =
    "The document for this task is not shown: read it with prompt_search.\n\n";

/// The turn that shows a tool's result.
fn result_turn(name: &str, result: &str) -> String {
    format!(
        "{name} returned:\n{result}\nIf this answers the task, reply with the answer action, giving only what the task asks for."
    )
}

/// JSON as the action grammar spells it (`", "` between items, `": "`
/// after keys), so demonstrations read exactly like the model's own actions.
fn spelled(v: &Value) -> String {
    match v {
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, x)| format!("{}: {}", Value::String(k.clone()), spelled(x)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(a) => format!("[{}]", a.iter().map(spelled).collect::<Vec<_>>().join(", ")),
        x => x.to_string(),
    }
}

fn action_text(tool: &str, arguments: Value) -> String {
    spelled(&json!({"tool": tool, "arguments": arguments}))
}

/// Worked examples of the loop, as earlier turns of the conversation: for
/// each retrieval tool among `tools`, made-up tasks solved with it (lookups
/// in an invented document or knowledge base, one that follows a reference
/// to a second lookup). None for the calculator: with one, the 135M model
/// answered "What is 347 times 29?" itself instead of calling it. They show the format and the habit
/// of answering with the value a result gives; nothing in them is from a
/// task the runtime is measured on.
pub fn demonstrations(tools: &[&dyn Tool]) -> Vec<ChatMessage> {
    let has = |n: &str| tools.iter().any(|t| t.name() == n);
    let mut m = Vec::new();
    let call = |m: &mut Vec<ChatMessage>, tool: &str, args: Value, result: &str| {
        m.push(ChatMessage::assistant(action_text(tool, args)));
        m.push(ChatMessage::user(result_turn(tool, result)));
    };
    let answer = |m: &mut Vec<ChatMessage>, text: &str| {
        m.push(ChatMessage::assistant(action_text(
            "answer",
            json!({ "text": text }),
        )));
    };
    if has("prompt_search") {
        m.push(ChatMessage::user(format!(
            "{DOCUMENT_NOT_SHOWN}What is the phone number of the office \"Harbor-Lights 4\"?"
        )));
        call(
            &mut m,
            "prompt_search",
            json!({"question": "phone number of the office Harbor-Lights 4"}),
            "Harbor-Lights 4: phone 5550142, open from 9 to 17.",
        );
        answer(&mut m, "5550142");
        m.push(ChatMessage::user(format!(
            "{DOCUMENT_NOT_SHOWN}Which port does the service gamma use?"
        )));
        call(
            &mut m,
            "prompt_search",
            json!({"question": "port of gamma"}),
            "gamma.port = relay.port",
        );
        call(
            &mut m,
            "prompt_search",
            json!({"question": "relay.port"}),
            "relay.port = 2291",
        );
        answer(&mut m, "2291");
    }
    if has("search") {
        m.push(ChatMessage::user(
            "How many moons does the planet Oruvan have?".to_string(),
        ));
        call(
            &mut m,
            "search",
            json!({"query": "How many moons does the planet Oruvan have?"}),
            "Oruvan is the fourth planet of the Teskar system, found in 1931. It has 11 moons.",
        );
        answer(&mut m, "11");
        m.push(ChatMessage::user(
            "Who wrote the song \"Lanterns over Vell\"?".to_string(),
        ));
        call(
            &mut m,
            "search",
            json!({"query": "Who wrote the song Lanterns over Vell?"}),
            "Lanterns over Vell is a song from 1987, written by Ama Sorensk for the band Pale Harbour.",
        );
        answer(&mut m, "Ama Sorensk");
    }
    m
}

fn system_prompt(tools: &[&dyn Tool]) -> String {
    let mut s = String::from(
        "You solve the user's task step by step. Each reply is one JSON action. \
         Call a tool when the task needs one, then answer.\nTools:\n",
    );
    // Names of the arguments only: the grammar holds their schemas, and a
    // small model reads a short list better than JSON Schema.
    for t in tools
        .iter()
        .map(|t| (t.name(), t.description(), t.parameters()))
    {
        let args: Vec<String> = t.2["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        s.push_str(&format!(
            "- {}: {} Arguments: {}.\n",
            t.0,
            t.1,
            args.join(", ")
        ));
    }
    s.push_str("- answer: gives the final answer. Arguments: text.\n");
    s.push_str(
        "Reply as {\"tool\": NAME, \"arguments\": {...}}, taking the arguments from the task. \
         After a tool's result, answer with it.",
    );
    s
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push_str(" ...");
    t
}

/// Runs the loop for `task` (the question, with any short context), with
/// `tools` at the model's disposal. `context`: a long document given with the
/// task, shown whole when short, else only through a `prompt_search` tool
/// among `tools` (the caller builds it over the same text).
#[cfg(not(target_arch = "wasm32"))]
pub fn solve(
    session: &mut Session,
    tools: &[&dyn Tool],
    task: &str,
    context: Option<&str>,
    opts: &SolveOptions,
) -> Result<Solution> {
    pollster::block_on(solve_async(session, tools, task, context, opts))
}

/// [`solve`] for callers that must not block (the browser).
pub async fn solve_async(
    session: &mut Session,
    tools: &[&dyn Tool],
    task: &str,
    context: Option<&str>,
    opts: &SolveOptions,
) -> Result<Solution> {
    let model = session.model.clone();
    let template = model.chat_template.as_ref().ok_or_else(|| {
        Error::Model("the loop renders turns through a chat template; this model has none".into())
    })?;
    let t0 = Instant::now();
    let mut user = String::new();
    // Sources to read before answering: the hidden document, and tools
    // holding something the task names.
    let mut sources: Vec<String> = Vec::new();
    if let Some(c) = context {
        let n = model.tokenizer.encode(c)?.len();
        if n <= opts.inline_context_tokens {
            user.push_str(c);
            user.push_str("\n\n");
        } else if tools.iter().any(|t| t.name() == "prompt_search") {
            user.push_str(DOCUMENT_NOT_SHOWN);
            sources.push("prompt_search".into());
        } else {
            return Err(Error::Model(format!(
                "the context has {n} tokens, more than the {} shown whole, and no prompt_search tool is given",
                opts.inline_context_tokens
            )));
        }
    }
    user.push_str(task);
    for t in tools {
        if t.relevant_to(task) && !sources.iter().any(|s| s == t.name()) {
            sources.push(t.name().to_string());
        }
    }
    if !opts.read_before_answer {
        sources.clear();
    }
    // While unread, only calls of the sources are offered.
    let mut unread = !sources.is_empty();
    let mut msgs = vec![ChatMessage::system(system_prompt(tools))];
    if opts.demonstrations {
        msgs.extend(demonstrations(tools));
    }
    msgs.push(ChatMessage::user(user));
    let mut trace = Vec::new();
    let mut tokens = 0usize;
    let mut calls = 0usize;
    let mut retries = 0usize;
    let mut attempt = 0u64;
    // Turns after the last call that went well: a failed check rewinds here.
    let mut good = msgs.len();
    // Calls made so far: repeating one adds nothing, so a repeat ends the
    // calls and the next action must be the answer.
    let mut made: Vec<(String, Value)> = Vec::new();
    let mut answer_now = false;
    let mut checks = 0usize;
    // The last tool result the model has been shown (the reader's context).
    let mut last_result: Option<String> = None;
    loop {
        let allow_calls = calls < opts.max_calls && !answer_now;
        let offered: Vec<&dyn Tool> = tools
            .iter()
            .copied()
            .filter(|t| !unread || sources.iter().any(|s| s == t.name()))
            .collect();
        let grammar =
            Grammar::JsonSchema(actions(&offered, allow_calls, !unread, opts.max_arg_chars));
        let (text, n, secs) = act(session, template, &msgs, &grammar, opts, attempt).await?;
        tokens += n;
        let Ok(action) = parse_action(&text) else {
            trace.push(step(
                "invalid",
                None,
                Value::Null,
                None,
                None,
                &text,
                n,
                secs,
            ));
            // An action cut off by its budget: count it as a call, try again.
            calls += 1;
            if calls > opts.max_calls + 1 {
                break;
            }
            continue;
        };
        msgs.push(ChatMessage::assistant(text.clone()));
        let (name, args) = match action {
            Action::Call { tool, arguments } => (tool, arguments),
            Action::Answer {
                text: mut answer,
                arguments: mut args,
            } => {
                // Checks by the tools first: a tool that knows more about
                // this answer shows it, as if the model had asked, and the
                // model goes on from there.
                if checks < opts.max_checks {
                    if let Some((tool, cargs, result)) = tools.iter().find_map(|t| {
                        t.check_answer(task, &answer)
                            .map(|(a, r)| (t.name().to_string(), a, r))
                    }) {
                        checks += 1;
                        trace.push(step(
                            "check_call",
                            Some(tool.clone()),
                            cargs.clone(),
                            Some(result.clone()),
                            None,
                            &text,
                            n,
                            secs,
                        ));
                        msgs.pop();
                        msgs.push(ChatMessage::assistant(action_text(&tool, cargs)));
                        msgs.push(ChatMessage::user(result_turn(
                            &tool,
                            &clip(&result, opts.max_result_chars),
                        )));
                        good = msgs.len();
                        last_result = Some(result);
                        continue;
                    }
                }
                trace.push(step(
                    "answer",
                    None,
                    args.clone(),
                    None,
                    None,
                    &text,
                    n,
                    secs,
                ));
                // No check to make: the reader writes the answer from the last
                // result (once, at the end: it gives up the chat's cache). A
                // result that is one value (the calculator's) has nothing to
                // pick from: the reader only restated the sum around it
                // ("275 * 88 = 24200").
                let readable = last_result
                    .as_deref()
                    .filter(|r| r.split_whitespace().nth(1).is_some());
                if let (true, Some(ctx)) = (opts.reader, readable) {
                    let (r, n, secs) = read(session, ctx, task, opts).await?;
                    tokens += n;
                    trace.push(step(
                        "read",
                        None,
                        json!({ "text": r }),
                        None,
                        None,
                        &r,
                        n,
                        secs,
                    ));
                    let known = format!("{task}\n{ctx}");
                    if reader_replaces(&r, &answer, task, &known) {
                        answer = r;
                        args = json!({ "text": answer });
                        msgs.pop();
                        msgs.push(ChatMessage::assistant(action_text("answer", args.clone())));
                    }
                }
                if opts.verify && retries < opts.retries {
                    msgs.push(ChatMessage::user(format!(
                        "Check: is \"{answer}\" the correct answer to the task? Reply with JSON."
                    )));
                    let g = Grammar::JsonSchema(json!({
                        "type": "object",
                        "properties": {"correct": {"type": "boolean"}},
                        "required": ["correct"],
                        "additionalProperties": false
                    }));
                    let (t, n, secs) = act(session, template, &msgs, &g, opts, attempt).await?;
                    tokens += n;
                    let ok = serde_json::from_str::<Value>(&t)
                        .ok()
                        .and_then(|v| v["correct"].as_bool())
                        .unwrap_or(true);
                    trace.push(step(
                        "check",
                        None,
                        json!({ "correct": ok }),
                        None,
                        None,
                        &t,
                        n,
                        secs,
                    ));
                    if !ok {
                        retries += 1;
                        attempt += 1;
                        msgs.truncate(good);
                        continue;
                    }
                }
                return Ok(Solution {
                    answer: Some(answer),
                    trace,
                    tokens,
                    seconds: t0.elapsed().as_secs_f64(),
                });
            }
        };
        calls += 1;
        if made.iter().any(|(n, a)| *n == name && *a == args) {
            trace.push(step("repeat", Some(name), args, None, None, &text, n, secs));
            msgs.pop();
            answer_now = true;
            continue;
        }
        made.push((name.clone(), args.clone()));
        let (result, error) = match run_call(tools, &name, &args) {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        let shown = match (&result, &error) {
            (Some(r), _) => result_turn(&name, &clip(r, opts.max_result_chars)),
            (_, Some(e)) => format!("Error from {name}: {e}"),
            _ => unreachable!(),
        };
        if error.is_none() && sources.contains(&name) {
            unread = false;
        }
        trace.push(step(
            "call",
            Some(name),
            args,
            result.clone(),
            error.clone(),
            &text,
            n,
            secs,
        ));
        msgs.push(ChatMessage::user(shown));
        if let Some(r) = &result {
            good = msgs.len();
            last_result = Some(r.clone());
        }
    }
    Ok(Solution {
        answer: None,
        trace,
        tokens,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[allow(clippy::too_many_arguments)]
fn step(
    kind: &str,
    tool: Option<String>,
    arguments: Value,
    result: Option<String>,
    error: Option<String>,
    text: &str,
    tokens: usize,
    seconds: f64,
) -> TraceStep {
    TraceStep {
        kind: kind.into(),
        tool,
        arguments,
        result,
        error,
        text: text.into(),
        tokens,
        seconds,
    }
}

/// Whether the reader's line `read` replaces the model's `answer`. A number
/// the sources (`known`: the task and the last result) do not hold is
/// invented, and a line of the task's own words (the key asked about,
/// copied back) answers nothing: then the model's own answer stands, if it
/// has none such. Nor does a line with no number at all replace an answer
/// whose numbers the sources hold ("VAR is the answer to the question"
/// over a right 61062, EVAL.md 2026-12-07).
fn reader_replaces(read: &str, answer: &str, task: &str, known: &str) -> bool {
    let has_number = |s: &str| s.chars().any(|c| c.is_ascii_digit());
    let answer_grounded = grounded(answer, known);
    let answer_stands = has_number(answer) && answer_grounded;
    adds_to(read, task)
        && (grounded(read, known) || !answer_grounded)
        && (has_number(read) || !answer_stands)
}

/// Whether `answer` says more than the task: a line made only of the
/// task's terms, one of them holding a digit, copies back the key or code
/// the task asks about. (A line of the task's words alone may be right:
/// the answer to "which is older, A or B?".)
fn adds_to(answer: &str, task: &str) -> bool {
    let asked = crate::kb::lexical::terms(task);
    let said = crate::kb::lexical::terms(answer);
    said.iter().any(|t| !asked.contains(t))
        || !said.iter().any(|t| t.chars().any(|c| c.is_ascii_digit()))
}

/// Whether every number in `answer` (a term holding a digit) appears in
/// `sources`: the classic invention of a small model is a plausible number.
fn grounded(answer: &str, sources: &str) -> bool {
    let have = crate::kb::lexical::terms(sources);
    crate::kb::lexical::terms(answer)
        .iter()
        .filter(|t| t.chars().any(|c| c.is_ascii_digit()))
        .all(|t| have.contains(t))
}

/// The reader's document. The instruction and the "Text:" label matter to
/// a 135M model: over 192 questions on invented passages (kb_qa's
/// generator, seeds 0 to 3) the bare `{context}\n\nQuestion: {q}\nAnswer:`
/// with free numbers was right 156 times; with "Read the text and answer
/// the question.", "Text:" and numbers confined as in [`reader_pattern`],
/// 180; asking for "a few words" as well, 189 (and 96 of 96 on seeds 7 and
/// 8): without it the model often copies the whole passage back, its first
/// number the wrong one.
fn reader_prompt(context: &str, question: &str) -> String {
    format!(
        "Read the text and answer the question in a few words.\n\nText: {}\n\nQuestion: {question}\nAnswer:",
        context.trim()
    )
}

/// The reader's grammar: one line of at least one visible character (a
/// small model sometimes ends the document at once after "Answer:") in
/// which every run of digits is a number `sources` holds. Left free,
/// the 135M model answers a question about a year with the year it thinks
/// it is now ("The answer is: 2022") a fifth of the time; confined, it
/// writes the year the text gives. Without numbers in the sources the line
/// is free (and [`grounded`] judges it).
pub fn reader_pattern(sources: &str) -> String {
    let mut nums: Vec<String> = sources
        .split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    nums.sort_unstable();
    nums.dedup();
    // A table of numbers is no source to confine to (nor a small grammar).
    if nums.is_empty() || nums.len() > 256 {
        return r" ?[^\s][^\n]{0,200}\n?".into();
    }
    // A number only after a non-digit, so two never run together ("214"
    // and "1618" do not make "2141618").
    let n = format!("({})", nums.join("|"));
    format!(r" ?({n}|[^\s0-9]{n}?)([^\n0-9]{n}?)*\n?")
}

/// The reader: the model continues [`reader_prompt`]
/// (the question: the task from its last "Question:" on, a trailing
/// "Answer:" cue dropped) as
/// plain text, greedy, up to the first line break. Returns the trimmed
/// line, its tokens and seconds. The chat's cache is given up for this (the
/// next action, if any, feeds the conversation again).
async fn read(
    session: &mut Session,
    context: &str,
    task: &str,
    opts: &SolveOptions,
) -> Result<(String, usize, f64)> {
    let t0 = Instant::now();
    let model = session.model.clone();
    let mut q = task.trim();
    if let Some(x) = q.strip_suffix("Answer:") {
        q = x.trim_end();
    }
    // The question proper: the task's last "Question:" on, its
    // instructions before that being about reading what the context now
    // holds.
    if let Some(i) = q.rfind("Question:") {
        q = q[i + "Question:".len()..].trim();
    }
    let prompt = reader_prompt(context, q);
    // A document of its own: the tokenizer's start (BOS) as `lottery run`.
    let ids = model.tokenizer.encode_with(&prompt, true)?;
    let kept = session.rewind_to_prefix(&ids)?;
    let mut c = model.constraint(&Grammar::Regex(reader_pattern(&format!(
        "{task}\n{context}"
    ))))?;
    let g = session
        .generate_constrained_async(
            &ids[kept..],
            &GenerateOptions {
                max_tokens: opts.max_action_tokens.min(48),
                stop: vec!["\n".into()],
                ..Default::default()
            },
            &mut c,
            |_| HookAction::Continue,
        )
        .await?;
    let line = g.text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    Ok((
        line.trim().to_string(),
        g.ids.len(),
        t0.elapsed().as_secs_f64(),
    ))
}

/// One constrained reply to the conversation so far: the cache keeps what
/// the conversation shares with what it holds, only the rest is fed.
/// Greedy on the first attempt, sampled on retries.
async fn act(
    session: &mut Session,
    template: &crate::load::ChatTemplate,
    msgs: &[ChatMessage],
    grammar: &Grammar,
    opts: &SolveOptions,
    attempt: u64,
) -> Result<(String, usize, f64)> {
    let t0 = Instant::now();
    let model = session.model.clone();
    let text = template.render(msgs, true)?;
    let ids = model.tokenizer.encode(&text)?;
    let kept = session.rewind_to_prefix(&ids)?;
    let mut c = model.constraint(grammar)?;
    let g = session
        .generate_constrained_async(
            &ids[kept..],
            &GenerateOptions {
                max_tokens: opts.max_action_tokens,
                sampler: SamplerSettings {
                    temperature: if attempt == 0 { 0.0 } else { 0.7 },
                    seed: opts.seed + attempt,
                    ..Default::default()
                },
                ..Default::default()
            },
            &mut c,
            |_| HookAction::Continue,
        )
        .await?;
    Ok((
        g.text.trim().to_string(),
        g.ids.len(),
        t0.elapsed().as_secs_f64(),
    ))
}

#[cfg(test)]
mod tests {
    use super::reader_replaces;

    const TASK: &str =
        "VAR QPMZR = 61062. VAR HHJKL = QPMZR.\nQuestion: Which value does HHJKL hold?";

    #[test]
    fn a_line_without_a_number_keeps_a_grounded_numeric_answer() {
        let known = format!("{TASK}\nVAR QPMZR = 61062");
        assert!(!reader_replaces(
            "VAR is the answer to the question",
            "61062",
            TASK,
            &known
        ));
        // The same line over an answer the sources do not hold, or one with
        // no number, still replaces it.
        assert!(reader_replaces(
            "VAR is the answer to the question",
            "77777",
            TASK,
            &known
        ));
        assert!(reader_replaces(
            "It holds QPMZR's value",
            "I do not know",
            TASK,
            &known
        ));
    }

    #[test]
    fn a_grounded_number_replaces_and_an_invented_one_does_not() {
        let task = "Question: How tall is the Ardent Spire?";
        let known = format!("{task}\nThe Ardent Spire, built in 1840, is 212 metres tall.");
        assert!(reader_replaces("212 metres", "1840", task, &known));
        assert!(!reader_replaces("300 metres", "212", task, &known));
        assert!(reader_replaces(
            "300 metres",
            "It is 250 metres",
            task,
            &known
        ));
        // A line of the task's words alone leaves a grounded number.
        assert!(!reader_replaces("Ardent Spire", "212", task, &known));
    }
}
