#!/usr/bin/env bash
# Builds the browser build: web/ (wasm32, wgpu's WebGPU backend) through
# wasm-bindgen into web/www/pkg/, and links the default model into
# web/www/models/ (both git-ignored). Installs what it needs: the wasm32
# target and wasm-bindgen-cli at the version Cargo.lock pins.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown
want="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
  cargo install wasm-bindgen-cli --version "$want"
fi
cargo build --release --target wasm32-unknown-unknown -p lottery-web
wasm-bindgen --target web --no-typescript --out-dir web/www/pkg \
  target/wasm32-unknown-unknown/release/lottery_web.wasm
model="$(bash scripts/fetch-model.sh)"
mkdir -p web/www/models
ln -sf "$model" web/www/models/SmolLM2-135M-Instruct.Q4_1.gguf
echo "built web/www (wasm $(du -h web/www/pkg/lottery_web_bg.wasm | cut -f1))"
