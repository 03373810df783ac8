#!/usr/bin/env bash
# Runs one coverage-guided fuzz target (libFuzzer through cargo-fuzz) for
# SECONDS, with a memory limit, starting from fuzz/seeds/TARGET and keeping
# what it finds in fuzz/corpus/TARGET. Not run in CI; the crashes it finds
# become files under tests/hostile/ (see tests/hostile.rs).
#
#   scripts/fuzz.sh TARGET SECONDS [JOBS]
#   targets: gguf hf_dir tokenizer chat_template tensor_decode tool_call
#
# A crash, a hang (-timeout) or an allocation past the limits stops the run
# and leaves the input in fuzz/artifacts/TARGET/.
set -euo pipefail
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS [JOBS]}
secs=${2:-60}
jobs=${3:-1}
case "$target" in
gguf | hf_dir | tokenizer | chat_template | tensor_decode | tool_call) ;;
*) echo "unknown target $target (gguf hf_dir tokenizer chat_template tensor_decode tool_call)" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
[ -d "$root/fuzz/seeds/$target" ] || python3 "$root/scripts/fuzz-seeds.py"
cd "$root/fuzz"
mkdir -p "corpus/$target" "artifacts/$target"
# -s none: no AddressSanitizer. The code under test is safe Rust; what we
# look for is panics, hangs and unbounded allocation, and the sanitizer
# would halve the executions per second.
cargo +nightly fuzz build -s none "$target"
bin="${CARGO_TARGET_DIR:-target}/$(rustc -vV | sed -n 's/^host: //p')/release/$target"
# Memory: libFuzzer's -rss_limit_mb catches memory that is touched (its
# -malloc_limit_mb needs a sanitizer's allocator hooks, so it is not used);
# an address-space
# limit also turns a huge untouched allocation (an unchecked count) into an
# allocation failure, which aborts and is reported as a crash. 4 GB leaves
# room for the 256 MB stack a chat-template render reserves.
ulimit -v $((4 << 20))
par=()
if [ "$jobs" -gt 1 ]; then par=(-jobs="$jobs" -workers="$jobs"); fi
exec "$bin" "corpus/$target" "seeds/$target" \
    -max_total_time="$secs" -runs="${FUZZ_RUNS:--1}" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$target/" ${par[@]+"${par[@]}"}
