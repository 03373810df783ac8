#!/usr/bin/env bash
# Pruning benchmark (BENCHMARKS.md, "Sparse weights"): each method x pattern
# x value format on the default model, perplexity on the golden text,
# calibration on 2,048 tokens of non-GNU license texts (the scored text is
# the GPL-3's start, so no GNU license is used).
# Usage: scripts/bench-prune.sh [OUT_DIR] [CONFIG...], CONFIG = METHOD:PATTERN:VALUES
# with PATTERN 0.5 / 0.7 (unstructured sparsity) or 2:4 / 4:8 and METHOD
# magnitude, wanda, sparsegpt (pruned and quantized in one pass, its default
# with block values) or sparsegpt-after (kept values rounded after pruning).
# LOTTERY_BIN picks the binary (default target/release/lottery).
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/lottery-xdg}"
out="${1:-target/bench-prune}"
shift || true
mkdir -p "$out"
model="${LOTTERY_MODEL:-models-cache/SmolLM2-135M-Instruct.Q4_1.gguf}"
calib="${CALIB:-$out/calib.txt}"
if [ ! -s "$calib" ]; then
  cat /usr/share/common-licenses/{Apache-2.0,MPL-2.0,Artistic,BSD,CC0-1.0} > "$calib"
fi
text="${PPL_TEXT:-../shared/golden/ppl_text.txt}"
bin="${LOTTERY_BIN:-target/release/lottery}"
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
  configs=(magnitude:0.5:q8_0 wanda:0.5:q8_0 sparsegpt:0.5:q8_0 magnitude:2:4:q4_0 wanda:2:4:q4_0 sparsegpt:2:4:q4_0)
fi
for c in "${configs[@]}"; do
  method="${c%%:*}"; rest="${c#*:}"; values="${rest##*:}"; pat="${rest%:*}"
  if [[ "$pat" == *:* ]]; then sel=(--pattern "$pat"); else sel=(--sparsity "$pat"); fi
  f="$out/${method}-${pat/:/_}-${values}.gguf"
  cal=()
  [ "$method" != magnitude ] && cal=(--calibration "$calib" --calib-tokens 2048)
  after=()
  [ "$method" = sparsegpt-after ] && after=(--round-after)
  /usr/bin/time -f "%e s" -o "$f.time" "$bin" prune --in "$model" --out "$f" --method "${method%-after}" "${after[@]}" \
    "${sel[@]}" --values "$values" "${cal[@]}" > "$f.prune.txt" 2>&1
  "$bin" perplexity --model "$f" --file "$text" --json > "$f.ppl.json" 2>/dev/null
  ppl=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['perplexity'])" "$f.ppl.json")
  bits=$(tail -1 "$f.prune.txt" | sed -E 's/.*: ([0-9.]+) bits per weight.*/\1/')
  echo "$method $pat $values: perplexity $ppl, $bits bits/weight in the pruned layers, $(stat -c %s "$f") bytes, pruned in $(cat "$f.time")" | tee -a "$out/summary.txt"
done
