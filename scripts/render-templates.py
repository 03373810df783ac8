#!/usr/bin/env python3
"""Renders the chat templates in models/tests/templates/ with Jinja2 set up
as transformers' apply_chat_template sets it up, and writes the expected
outputs to models/tests/templates/cases.json.

Run by hand (needs jinja2), never in CI; tests/chat.rs compares our renders
with these byte for byte and checks that they fit the render limits.
"""
import json
import pathlib
import random

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = pathlib.Path(__file__).resolve().parent.parent / "models" / "tests" / "templates"


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def env():
    e = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    return e


TOOLS = [
    {"type": "function", "function": {
        "name": "calculator",
        "description": "Exact arithmetic on one expression, e.g. \"(3 + 4) * 5\".",
        "parameters": {"type": "object", "properties": {
            "expression": {"type": "string", "description": "digits, + - * / ^ ( ) and ."}},
            "required": ["expression"]}}},
    {"type": "function", "function": {
        "name": "search",
        "description": "Top passages of the knowledge base for a query (é, ü, 漢字).",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string"}, "k": {"type": "integer", "default": 3}},
            "required": ["query"]}}},
]


def long_conversation(seed, turns, words):
    rng = random.Random(seed)
    vocab = "alpha beta gamma delta the of a to is in cache token model 12 3.5 {x} 'q' \"dq\"".split()
    msgs = []
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        text = " ".join(rng.choice(vocab) for _ in range(words))
        msgs.append({"role": role, "content": f"  {text}\n"})
    return msgs


def main():
    basic = [
        {"role": "system", "content": "You are terse.\n"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "  And 3*3? Answer with a number. \n"},
    ]
    no_system = basic[1:]
    bad_order = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    long_conv = long_conversation(7, 40, 40)
    plans = []
    for name in ["qwen2.5", "llama3.1", "mistral-instruct", "gemma", "phi3"]:
        bos, eos = {
            "qwen2.5": ("", "<|im_end|>"),
            "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
            "mistral-instruct": ("<s>", "</s>"),
            "gemma": ("<bos>", "<eos>"),
            "phi3": ("<s>", "<|endoftext|>"),
        }[name]
        cases = [
            ("basic", basic, True, {}),
            ("no system, no generation prompt", no_system, False, {}),
            ("roles out of order", bad_order, True, {}),
            ("long conversation", long_conv, True, {}),
        ]
        if name in ("qwen2.5", "llama3.1"):
            cases.append(("tools", no_system, True, {"tools": TOOLS}))
        if name == "llama3.1":
            cases.append(("tools in the system prompt", basic, True,
                          {"tools": TOOLS, "tools_in_user_message": False, "date_string": "29 Nov 2026"}))
        for label, msgs, gen, extra in cases:
            plans.append((name, bos, eos, label, msgs, gen, extra))

    e = env()
    out = []
    for name, bos, eos, label, msgs, gen, extra in plans:
        src = (HERE / f"{name}.jinja").read_text()
        tmpl = e.from_string(src)
        case = {"template": name, "bos_token": bos, "eos_token": eos, "case": label,
                "messages": msgs, "add_generation_prompt": gen, "extra": extra}
        try:
            case["text"] = tmpl.render(messages=msgs, add_generation_prompt=gen,
                                       bos_token=bos, eos_token=eos, **extra)
        except jinja2.exceptions.TemplateError as err:
            case["error"] = str(err)
        out.append(case)
    (HERE / "cases.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(out)} cases")


if __name__ == "__main__":
    main()
