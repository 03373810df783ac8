#!/usr/bin/env python3
"""Runs a case set exported by `lottery eval --export-cases FILE` through HF
transformers (the reference setup of ../shared/CAPABILITY.md: the GGUF's
weights dequantized to f32, greedy, no chat template, no BOS, EOS does not
stop) and scores it with the protocol's rules. With --ours CASES.jsonl (a
`lottery eval` result directory's cases.jsonl for the same seed) it also
compares case by case: which cases the two implementations score
differently, and whether their outputs are the same text.

By hand, never in CI (needs torch, transformers and gguf from PyPI):
  lottery eval --kv f32 --seed 1 --tasks kv_retrieval,var_tracking --export-cases /tmp/cases.jsonl
  python3 scripts/reference-eval.py /tmp/cases.jsonl --out /tmp/ref.jsonl \\
      --ours eval-results/DIR/cases.jsonl --config "SmolLM2-135M-Instruct.Q4_1.gguf, kv f32, full, tools none"
"""
import argparse
import json
import os
import re
import sys
import time
from collections import OrderedDict


def first_digits(text):
    m = re.search(r"[0-9]+", text)
    return m.group(0) if m else None


def correct(case, output):
    rule = case["scoring"]
    if rule == "FirstDigits":
        got = first_digits(output)
    elif rule == "DigitsAfterCall":
        i = output.find(">>")
        got = first_digits(output[i + 2:]) if i >= 0 else None
    elif rule == "FirstWord":
        words = output.split()
        got = words[0] if words else None
    else:
        raise SystemExit(f"scoring rule {rule} is not supported here")
    return got == case["answer"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cases")
    ap.add_argument("--model", default="models-cache/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", required=True, help="JSONL of outputs (resumed if present)")
    ap.add_argument("--ours", help="a lottery eval cases.jsonl to compare with")
    ap.add_argument("--config", help="the configuration label of --ours to compare with")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if a.threads:
        torch.set_num_threads(a.threads)
    d, f = os.path.split(os.path.abspath(a.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()

    cases = [json.loads(l) for l in open(a.cases) if l.strip()]
    done = {}
    if os.path.exists(a.out):
        for l in open(a.out):
            if l.strip():
                r = json.loads(l)
                done[(r["task"], r["length"], r["trial"])] = r
    out = open(a.out, "a")
    t0 = time.time()
    for i, c in enumerate(cases):
        key = (c["task"], c["length"], c["trial"])
        if key in done:
            continue
        ids = tok(c["prompt"], add_special_tokens=False, return_tensors="pt").input_ids
        new = []
        with torch.no_grad():
            past = None
            x = ids
            for _ in range(c["max_tokens"]):
                o = model(input_ids=x, past_key_values=past, use_cache=True)
                past = o.past_key_values
                nxt = int(torch.argmax(o.logits[0, -1]))
                new.append(nxt)
                x = torch.tensor([[nxt]])
                if c["stop"] and c["stop"] in tok.decode(new, skip_special_tokens=True):
                    break
        # Special tokens print as nothing, as lottery's detokenizer does.
        text = tok.decode(new, skip_special_tokens=True)
        if c["stop"] and c["stop"] in text:
            text = text[: text.index(c["stop"])]
        r = {"task": c["task"], "length": c["length"], "trial": c["trial"], "seed": c["seed"],
             "prompt_tokens": ids.shape[1], "answer": c["answer"], "output": text,
             "correct": correct(c, text)}
        done[key] = r
        out.write(json.dumps(r) + "\n")
        out.flush()
        print(f"{i + 1}/{len(cases)} {c['task']} {c['length']} #{c['trial']}: "
              f"{'ok' if r['correct'] else 'miss'} ({time.time() - t0:.0f} s)", file=sys.stderr)

    cells = OrderedDict()
    for c in cases:
        r = done[(c["task"], c["length"], c["trial"])]
        k = f"{c['task']} {c['length']}"
        n, m = cells.get(k, (0, 0))
        cells[k] = (n + r["correct"], m + 1)
    print("| bucket | transformers (f32) |" + (" lottery | cases scored differently | same text |" if a.ours else ""))
    print("|---|---|" + ("---|---|---|" if a.ours else ""))
    ours = {}
    if a.ours:
        for l in open(a.ours):
            if not l.strip():
                continue
            r = json.loads(l)
            if a.config and r.get("config") != a.config:
                continue
            if r.get("seed") != cases[0]["seed"]:
                continue
            ours[(r["task"], r["length"], r["trial"])] = r
    for k, (n, m) in cells.items():
        line = f"| {k} | {n}/{m} |"
        if a.ours:
            keys = [(c["task"], c["length"], c["trial"]) for c in cases if f"{c['task']} {c['length']}" == k]
            have = [x for x in keys if x in ours]
            ok = sum(ours[x]["correct"] for x in have)
            diff = [x[2] for x in have if ours[x]["correct"] != done[x]["correct"]]
            same = sum(ours[x].get("output", "").strip() == done[x]["output"].strip() for x in have)
            line += f" {ok}/{len(have)} | {', '.join(map(str, diff)) or 'none'} | {same}/{len(have)} |"
        print(line)


if __name__ == "__main__":
    main()
