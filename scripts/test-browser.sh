#!/usr/bin/env bash
# Browser smoke test: builds the engine for wasm32 with wgpu's WebGPU backend
# and runs engine/tests/web.rs (the kernel conformance suite) in headless
# Chromium through chromedriver. Installs what it needs on a fresh machine:
# the wasm32 target, wasm-bindgen-cli matching Cargo.lock, chromium and
# chromium-driver.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
want="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
have="$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
  cargo install wasm-bindgen-cli --version "$want"
fi
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-900}"
# webdriver.json (Chromium flags: headless, WebGPU on SwiftShader) is read from the crate directory.
cd engine
cargo test --release --target wasm32-unknown-unknown --test web
