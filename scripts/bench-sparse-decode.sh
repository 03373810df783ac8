#!/usr/bin/env bash
# Sparse decode against the dense q4_0 twin (BENCHMARKS.md, "Sparse weights"):
# every pattern x value format of the pruning grid, pruned by magnitude
# (decode speed and bytes read depend on the format, not on the method),
# then `lottery bench` on each, the machine otherwise idle.
# Usage: scripts/bench-sparse-decode.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/lottery-xdg}"
out="${1:-target/bench-sparse-decode}"
mkdir -p "$out"
model="${LOTTERY_MODEL:-models-cache/SmolLM2-135M-Instruct.Q4_1.gguf}"
bin="${LOTTERY_BIN:-target/release/lottery}"
twin="$out/dense-q4_0.gguf"
[ -s "$twin" ] || "$bin" quantize --in "$model" --out "$twin" --type q4_0 --override token_embd=q8_0 >/dev/null
files=("$twin")
for values in q4_0 q8_0; do
  for pat in 0.5 0.7 2:4 4:8; do
    if [[ "$pat" == *:* ]]; then sel=(--pattern "$pat"); else sel=(--sparsity "$pat"); fi
    f="$out/magnitude-${pat/:/_}-$values.gguf"
    [ -s "$f" ] || "$bin" prune --in "$model" --out "$f" --method magnitude "${sel[@]}" --values "$values" >/dev/null
    files+=("$f")
  done
done
for f in "${files[@]}"; do
  "$bin" bench --model "$f" --json > "$f.bench.json" 2>/dev/null
  python3 - "$f" <<'PY'
import json, sys
f = sys.argv[1]
b = json.load(open(f + ".bench.json"))
keys = {k: b[k] for k in b if any(s in k for s in ("prefill", "decode", "bytes", "gb"))}
print(f.rsplit("/", 1)[-1], json.dumps(keys))
PY
done | tee "$out/summary.txt"
