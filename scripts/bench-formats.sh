#!/usr/bin/env bash
# Re-quantizes the default model to every weight format (embedding kept at
# Q8_0) and records bits per weight, file size, perplexity and decode speed:
# the table in BENCHMARKS.md. Usage: scripts/bench-formats.sh [OUT_DIR] [CHUNKS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/bench-formats}"
chunks="${2:-4}"
mkdir -p "$out"
bin="$root/target/release/lottery"
src="$root/models-cache/SmolLM2-135M-Instruct.Q4_1.gguf"
text="$root/../shared/golden/ppl_text.txt"
# CHUNKS chunks of 512 tokens of the golden text (4 = the whole file).
python3 - "$text" "$out/ppl.txt" "$chunks" <<'PY'
import sys
t = open(sys.argv[1]).read()
n = int(sys.argv[3])
# ~4.1 characters per token on this text; the tokenizer decides exactly.
open(sys.argv[2], "w").write(t if n >= 4 else t[: int(len(t) * n / 4.07) + 200])
PY
for ty in q4_1 f32 f16 bf16 q8_0 q4_0 q5_0 q5_1 iq4_nl q4_k q5_k q6_k; do
  m="$out/smol-$ty.gguf"
  if [ "$ty" = q4_1 ]; then m="$src"; else "$bin" quantize --in "$src" --out "$m" --type "$ty" --override token_embd=q8_0 >/dev/null; fi
  ppl=$("$bin" perplexity --model "$m" --file "$out/ppl.txt" --json)
  bench=$("$bin" bench --model "$m" --prompt-tokens 32 --decode-tokens 16 --reps 1 --json)
  python3 - "$ty" "$m" "$ppl" "$bench" <<'PY' | tee -a "$out/results.jsonl"
import json, os, sys
ty, m, ppl, bench = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(json.dumps({"type": ty, "file_mb": os.path.getsize(m) / 1e6, "ppl": ppl["perplexity"], "scored": ppl["scored"],
                  "decode_tok_s": bench["decode_tokens_per_s"], "weight_mb_per_token": bench["weight_bytes_per_token"] / 1e6}))
PY
  [ "$ty" = q4_1 ] || rm -f "$m"
done
