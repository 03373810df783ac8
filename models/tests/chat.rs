//! Chat templates: the golden chat prompts byte for byte, and the Jinja
//! features Hugging Face templates rely on.

mod common;

use common::{golden, ids, s};
use lottery_models::load::{ChatMessage, ChatTemplate, TemplateLimits, Tokenizer};

const USER_HEADER: &str = "<|im_start|>user\n";
const USER_END: &str = "<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn golden_chat_prompts_render_and_encode_exactly() {
    let Some(f) = common::model() else { return };
    let tmpl = ChatTemplate::from_gguf(f).unwrap();
    let tok = Tokenizer::from_gguf(f).unwrap();
    let mut n = 0;
    for p in golden()["prompts"].as_array().unwrap() {
        if s(&p["kind"]) != "chat" {
            continue;
        }
        n += 1;
        let text = s(&p["text"]);
        // The golden text is the template applied to one user message (the
        // template inserts its default system prompt).
        let start = text.find(USER_HEADER).expect("user turn") + USER_HEADER.len();
        let end = text.rfind(USER_END).expect("generation prompt");
        let user = &text[start..end];
        let rendered = tmpl.render(&[ChatMessage::user(user)], true).unwrap();
        assert_eq!(rendered, text, "prompt {}", s(&p["name"]));
        assert_eq!(
            tok.encode(&rendered).unwrap(),
            ids(&p["input_ids"]),
            "prompt {}",
            s(&p["name"])
        );
    }
    assert!(n >= 2, "expected chat prompts in the golden file");
}

#[test]
fn smollm2_template_details() {
    let Some(f) = common::model() else { return };
    let tmpl = ChatTemplate::from_gguf(f).unwrap();
    assert!(tmpl.source().contains("<|im_start|>"));
    let conv = [
        ChatMessage::system("Be brief."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
        ChatMessage::user("2+2?"),
    ];
    // An explicit system message replaces the default one.
    assert_eq!(
        tmpl.render(&conv, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    assert_eq!(
        tmpl.render(&[ChatMessage::user("x")], false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nx<|im_end|>\n"
    );
    assert_eq!(tmpl.render(&[], true).unwrap(), "<|im_start|>assistant\n");
}

fn render(src: &str, messages: &[ChatMessage]) -> String {
    ChatTemplate::new(src, "<s>", "</s>")
        .unwrap()
        .render(messages, true)
        .unwrap()
}

#[test]
fn trim_and_lstrip_blocks_like_transformers() {
    let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n  [{{ m.content }}]\n    {% endif %}\n{% endfor %}";
    let msgs = [
        ChatMessage::user("a"),
        ChatMessage::assistant("b"),
        ChatMessage::user("c"),
    ];
    // Jinja2 with trim_blocks + lstrip_blocks: block-tag lines vanish.
    assert_eq!(render(src, &msgs), "  [a]\n  [c]\n");
}

#[test]
fn bos_eos_and_generation_prompt_variables() {
    let src = "{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
    assert_eq!(
        render(src, &[ChatMessage::user("hi")]),
        "<s>user:hi</s>assistant:"
    );
}

#[test]
fn raise_exception_becomes_an_error() {
    let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}ok";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(t.render(&[ChatMessage::user("x")], true).unwrap(), "ok");
    let msg = t
        .render(&[ChatMessage::assistant("x")], true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Conversation roles must alternate"), "{msg}");
}

#[test]
fn python_string_methods_and_loop_controls() {
    let src = "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{% if m.content.startswith('skip') %}{% continue %}{% endif %}[{{ m.content.strip() | upper }}|{{ m.content.split(',')[0].rstrip() }}|{{ m.role.replace('user', 'U') }}]{% endfor %}";
    let msgs = [
        ChatMessage::user("  a, b \n"),
        ChatMessage::user("skip me"),
        ChatMessage::user("never"),
    ];
    assert_eq!(render(src, &msgs), "[A, B|  a|U]");
}

#[test]
fn namespace_slicing_and_negative_index() {
    // Patterns from the Llama 3 / Qwen 2 templates.
    let src = "{% set ns = namespace(n=0) %}{% for m in messages[1:] %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }} {{ messages[-1].content }} {{ messages | length }}";
    let msgs = [
        ChatMessage::system("s"),
        ChatMessage::user("u"),
        ChatMessage::assistant("last"),
    ];
    assert_eq!(render(src, &msgs), "2 last 3");
}

#[test]
fn tojson_matches_python_json_dumps() {
    let t = ChatTemplate::new(
        "{{ tools | tojson }}\n{{ tools[0] | tojson(indent=2) }}\n{{ [] | tojson }}{{ {} | tojson(indent=4) }}",
        "",
        "",
    )
    .unwrap();
    let tools = serde_json::json!([{
        "name": "calc",
        "description": "a<b & \"c\" é\n",
        "params": {"n": 1, "x": 1.0, "y": 2.5e-7, "ok": true, "none": null, "list": [1, "two"]}
    }]);
    let out = t
        .render_with(&[], false, serde_json::json!({ "tools": tools }))
        .unwrap();
    // Python: json.dumps(tools, ensure_ascii=False), keys in insertion
    // order as Python's dicts keep them.
    let want_line1 = "[{\"name\": \"calc\", \"description\": \"a<b & \\\"c\\\" é\\n\", \"params\": {\"n\": 1, \"x\": 1.0, \"y\": 2.5e-07, \"ok\": true, \"none\": null, \"list\": [1, \"two\"]}}]";
    let want_indent = "{\n  \"name\": \"calc\",\n  \"description\": \"a<b & \\\"c\\\" é\\n\",\n  \"params\": {\n    \"n\": 1,\n    \"x\": 1.0,\n    \"y\": 2.5e-07,\n    \"ok\": true,\n    \"none\": null,\n    \"list\": [\n      1,\n      \"two\"\n    ]\n  }\n}";
    let mut lines = out.splitn(2, '\n');
    assert_eq!(lines.next().unwrap(), want_line1);
    let rest = lines.next().unwrap();
    assert_eq!(rest, format!("{want_indent}\n[]{{}}"));
}

#[test]
fn template_errors_are_reported() {
    let msg = ChatTemplate::new("{% for m in messages %}", "", "")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("chat template") && msg.contains("compiling"),
        "{msg}"
    );
    let t = ChatTemplate::new("{{ messages[0].content | tojson(bogus=1) }}", "", "").unwrap();
    assert!(t.render(&[ChatMessage::user("x")], true).is_err());
}

#[test]
fn from_tokenizer_config_json() {
    let dir = std::env::temp_dir().join(format!("lottery-chatcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("tokenizer_config.json");
    std::fs::write(
        &p,
        r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>",
            "chat_template": [{"name": "tool_use", "template": "T"},
                              {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]}"#,
    )
    .unwrap();
    let t = ChatTemplate::from_tokenizer_config(&p).unwrap();
    assert_eq!(
        t.render(&[ChatMessage::user("x")], false).unwrap(),
        "<s>x</s>"
    );
    std::fs::write(&p, r#"{"eos_token": "</s>"}"#).unwrap();
    let msg = ChatTemplate::from_tokenizer_config(&p)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("chat_template"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Real-world templates (written from their public documentation) against
/// Jinja2 set up as transformers sets it up: `scripts/render-templates.py`
/// wrote the expected texts and errors.
#[test]
fn real_world_templates_match_jinja2() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/templates");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let name = s(&c["template"]);
        let label = format!("{name}: {}", s(&c["case"]));
        let src = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        let messages: Vec<ChatMessage> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(s(&m["role"]), s(&m["content"])))
            .collect();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        let t = ChatTemplate::new(src, s(&c["bos_token"]), s(&c["eos_token"])).unwrap();
        // A twentieth of the default budget is still plenty for real use.
        let tight = TemplateLimits {
            fuel: TemplateLimits::default().fuel / 20,
            max_output_bytes: 1 << 20,
        };
        for t in [&t, &t.clone().with_limits(tight)] {
            let got = t.render_with(&messages, gen, &c["extra"]);
            match c.get("error") {
                Some(e) => {
                    let msg = got.expect_err(&label).to_string();
                    assert!(msg.contains(s(e)), "{label}: {msg}");
                }
                None => assert_eq!(got.expect(&label), s(&c["text"]), "{label}"),
            }
        }
    }
}

/// Templates come from model files: work and memory are bounded, and the
/// error names the template and the limit. The time bound here only tells a
/// hang from an error; these stop in milliseconds.
#[test]
fn hostile_templates_stop_at_the_limits() {
    let cases = [
        // Two nested loops: 10^10 iterations.
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
            "fuel limit",
        ),
        // A string doubled 60 times in a loop (2^60 bytes).
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            "fuel limit",
        ),
        // The same with +, starting from the largest repetition minijinja allows.
        (
            "{% set ns = namespace(s='a' * 50000000) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
            "fuel limit",
        ),
        // No loop at all: chained assignments.
        (
            "{% set a = 'x' * 60000000 %}{% set b = a ~ a %}{% set c = b ~ b %}{% set d = c ~ c %}{{ d | length }}",
            "fuel limit",
        ),
        // Recursion instead of a loop.
        (
            "{% macro grow(s, n) %}{% if n > 0 %}{{ grow(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}{{ grow('ab', 60) }}",
            "fuel limit",
        ),
        // A list doubled in a loop, then joined.
        (
            "{% set ns = namespace(l=[1, 2]) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | join(',') }}",
            "fuel limit",
        ),
        // A lazily repeated list, materialised by a filter.
        (
            "{{ (messages * 100000000) | join(',') }}",
            "fuel limit",
        ),
        // Growth through the Python string method.
        (
            "{% set ns = namespace(s='aaaa') %}{% for i in range(40) %}{% set ns.s = ns.s.replace('a', 'aaaa') %}{% endfor %}{{ ns.s | length }}",
            "fuel limit",
        ),
        // Growth through the replace filter.
        (
            "{% set ns = namespace(s='aaaa') %}{% for i in range(40) %}{% set ns.s = ns.s | replace('a', 'aaaa') %}{% endfor %}{{ ns.s | length }}",
            "fuel limit",
        ),
        // Printing a lazily repeated list (found by the fuzzer: 13 s).
        ("{{ messages[:1] * 50000000 }}", "fuel limit"),
        ("{{ (messages[:1] * 50000000) | tojson }}", "fuel limit"),
        // As deep as the fuel allows (the loop stops at the limit), then
        // dropped: recursion in minijinja's drop once aborted the process.
        (
            "{% set ns = namespace(l=[]) %}{% for i in messages[:1] * 1000000 %}{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l }}",
            "fuel limit",
        ),
        (
            "{% set ns = namespace(s='\u{e9}' * 5000000) %}{{ [ns.s] | tojson(ensure_ascii=true) }}",
            "tojson: output passed",
        ),
        // tojson with an absurd indent.
        ("{{ messages | tojson(indent=1000000000) }}", "indent is limited"),
        // Cheap to make, too large to be a prompt.
        ("{{ 'x' * 20000000 }}", "output limit"),
    ];
    for (src, want) in cases {
        let t = ChatTemplate::new(src, "", "").unwrap();
        let start = std::time::Instant::now();
        let msg = t
            .render(&[ChatMessage::user("hi")], true)
            .expect_err(src)
            .to_string();
        let took = start.elapsed();
        assert!(msg.contains(want), "{src}: {msg}");
        assert!(msg.contains("chat template"), "{src}: {msg}");
        assert!(took.as_secs_f64() < 20.0, "{src}: took {took:?}");
    }
    // Containers turned into text by `~`, `|string` or `pprint` are cut
    // short past a budget (nesting, items, nested string bytes): the render
    // may end with the text or with an error, but it ends, quickly.
    for src in [
        // A namespace holding itself (recursed until the stack overflowed).
        "{% set ns = namespace() %}{% set ns.me = ns %}{{ ('' ~ ns) | length }}",
        "{% set ns = namespace() %}{% set ns.a = ns %}{% set ns.b = ns %}{{ ns | string | length }}",
        // A lazily repeated list, 50 million items.
        "{{ ('' ~ (messages[:1] * 50000000)) | length }}",
        "{{ (messages[:1] * 50000000) | string | length }}",
        "{{ (messages[:1] * 50000000) | pprint | length }}",
        // A list nested a hundred thousand deep, then printed.
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l }}",
        // One large string many times over.
        "{% set s = 'x' * 30000000 %}{{ ([s] * 1000) | string | length }}",
    ] {
        let t = ChatTemplate::new(src, "", "").unwrap();
        let start = std::time::Instant::now();
        let r = t.render(&[ChatMessage::user("hi")], true);
        let took = start.elapsed();
        if let Ok(text) = &r {
            assert!(text.len() < 1000, "{src}: {} bytes", text.len());
        }
        assert!(took.as_secs_f64() < 20.0, "{src}: took {took:?}");
    }
    // The error states the limit (the CLI test in tests/hostile.rs checks the GGUF key).
    let t = ChatTemplate::new(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    let msg = t.render(&[], true).unwrap_err().to_string();
    assert!(msg.contains("1000000"), "{msg}");
}
