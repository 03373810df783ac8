#!/usr/bin/env bash
# Alternates `lottery bench --json --reps 1 [ARGS]` between two or more
# lottery binaries N times and prints each one's median and best prefill and
# decode tokens/s. On a machine whose speed drifts (a shared VM), only runs
# interleaved like this compare two builds fairly.
#
#   scripts/bench-ab.sh N "ARGS" BIN_A BIN_B [BIN...]
#   e.g. scripts/bench-ab.sh 4 "--prompt-tokens 512" /tmp/old/lottery target/release/lottery
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,8p "$0" >&2; exit 2; }
n="$1"; args="$2"; shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/lottery-xdg}"
mkdir -p "$XDG_RUNTIME_DIR"
model="${LOTTERY_MODEL:-$root/models-cache/SmolLM2-135M-Instruct.Q4_1.gguf}"
out="$(mktemp)"
for _ in $(seq "$n"); do
  for bin in "$@"; do
    # shellcheck disable=SC2086
    "$bin" bench --model "$model" --json --reps 1 $args 2>/dev/null |
      python3 -c "import json, sys; d = json.load(sys.stdin); print(sys.argv[1], d['prefill_tokens_per_s'], d['decode_tokens_per_s'])" "$bin" |
      tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    b, p, d = line.split()
    runs[b].append((float(p), float(d)))
for b, v in runs.items():
    p = [x[0] for x in v]; d = [x[1] for x in v]
    print(f"{b}: prefill median {statistics.median(p):.1f} best {max(p):.1f}; "
          f"decode median {statistics.median(d):.2f} best {max(d):.2f} ({len(v)} runs)")
PY
rm -f "$out"
