#!/usr/bin/env bash
# Side by side: llama.cpp's llama-bench and `lottery bench` on the same GGUF
# with the same prompt and generation lengths, printed with their ratio.
# llama.cpp is built from the source distribution of llama-cpp-python on PyPI
# (which vendors llama.cpp) into target/llamacpp/ (git-ignored): the CPU
# backend by default, `--vulkan` adds its Vulkan backend (needs glslc and
# libvulkan-dev). Not part of CI: the build takes minutes. Run by hand for
# BENCHMARKS.md.
#
#   scripts/bench-vs-llamacpp.sh [--vulkan] [MODEL.gguf] [PROMPT_TOKENS] [GEN_TOKENS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
vulkan=0
if [ "${1:-}" = "--vulkan" ]; then vulkan=1; shift; fi
model="${1:-$(bash scripts/fetch-model.sh)}"
p="${2:-128}"
n="${3:-64}"
ver="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="$root/target/llamacpp"
build="$cache/build-$( [ $vulkan = 1 ] && echo vulkan || echo cpu )"
bench="$build/bin/llama-bench"
if [ ! -x "$bench" ]; then
  command -v cmake >/dev/null || { echo "needs cmake (apt-get install cmake)" >&2; exit 1; }
  mkdir -p "$cache"
  src="$cache/llama_cpp_python-$ver"
  if [ ! -d "$src" ]; then
    python3 - "$ver" "$cache" <<'PY'
import hashlib, json, sys, tarfile, urllib.parse, urllib.request
ver, out = sys.argv[1], sys.argv[2]
# The simple index (PEP 691 JSON) lists every file with its sha256.
index = "https://pypi.org/simple/llama-cpp-python/"
req = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(req))["files"]
name = f"llama_cpp_python-{ver}.tar.gz"
sdist = next((f for f in files if f["filename"] == name), None)
if sdist is None:
    sys.exit(f"{name} is not on PyPI")
path = f"{out}/{name}"
urllib.request.urlretrieve(urllib.parse.urljoin(index, sdist["url"]), path)
if hashlib.sha256(open(path, "rb").read()).hexdigest() != sdist["hashes"]["sha256"]:
    sys.exit(f"sha256 mismatch for {path}")
tarfile.open(path).extractall(out)
print(f"llama-cpp-python {ver}: {path}", file=sys.stderr)
PY
  fi
  flags=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF)
  [ $vulkan = 1 ] && flags+=(-DGGML_VULKAN=ON)
  echo "building llama-bench into $build (a few minutes)" >&2
  cmake -S "$src/vendor/llama.cpp" -B "$build" "${flags[@]}" >/dev/null 2>&1
  cmake --build "$build" --target llama-bench -j"$(nproc)" >"$cache/build.log" 2>&1 || { tail -20 "$cache/build.log" >&2; exit 1; }
fi
threads="$(nproc)"
ngl=0; [ $vulkan = 1 ] && ngl=99
echo "llama-bench -m $model -p $p -n $n -t $threads -ngl $ngl" >&2
"$bench" -m "$model" -p "$p" -n "$n" -t "$threads" -ngl "$ngl" -o json > "$cache/llama-bench.json"
cargo build --release --quiet --bin lottery
./target/release/lottery bench --model "$model" --prompt-tokens "$p" --decode-tokens "$n" --json > "$cache/lottery-bench.json"
python3 - "$cache/llama-bench.json" "$cache/lottery-bench.json" "$p" "$n" <<'PY'
import json, sys
lc = json.load(open(sys.argv[1])); lt = json.load(open(sys.argv[2])); p, n = sys.argv[3], sys.argv[4]
def lc_rate(kind):
    for r in lc:
        if kind == "pp" and r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0: return r["avg_ts"], r
        if kind == "tg" and r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0: return r["avg_ts"], r
    return float("nan"), {}
pp, r = lc_rate("pp"); tg, _ = lc_rate("tg")
backend = r.get("backends", r.get("backend", "?"))
ours_pp = lt["prefill_tokens_per_s"]; ours_tg = lt["decode_tokens_per_s"]
print(f"| engine | adapter | prefill tok/s (p={p}) | decode tok/s (n={n}) |")
print("|---|---|---|---|")
print(f"| llama.cpp {r.get('build_commit', '?')} ({backend}, {r.get('n_threads', '?')} threads) | {r.get('cpu_info', '?')} | {pp:.1f} | {tg:.1f} |")
print(f"| lottery | {lt.get('adapter', '?')} | {ours_pp:.1f} | {ours_tg:.1f} |")
print(f"| ratio lottery / llama.cpp | | {ours_pp / pp:.3f} | {ours_tg / tg:.3f} |")
PY
