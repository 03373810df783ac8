//! Chat templates: the golden chat prompts byte for byte, and the Jinja
//! features Hugging Face templates rely on.

mod common;

use common::{golden, ids, s};
use lottery_models::load::{ChatMessage, ChatTemplate, Tokenizer};

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
    // Python: json.dumps(tools, ensure_ascii=False) (keys sorted here because
    // serde_json's map is sorted; the template only formats).
    let want_line1 = r#"[{"description": "a<b & \"c\" é\n", "name": "calc", "params": {"list": [1, "two"], "n": 1, "none": null, "ok": true, "x": 1.0, "y": 2.5e-07}}]"#;
    let want_indent = "{\n  \"description\": \"a<b & \\\"c\\\" é\\n\",\n  \"name\": \"calc\",\n  \"params\": {\n    \"list\": [\n      1,\n      \"two\"\n    ],\n    \"n\": 1,\n    \"none\": null,\n    \"ok\": true,\n    \"x\": 1.0,\n    \"y\": 2.5e-07\n  }\n}";
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
