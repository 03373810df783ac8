#!/usr/bin/env bash
# Builds the browser demo and serves it at http://127.0.0.1:PORT/ (default
# 8080) until stopped, with the default model at models/ where the page looks
# when no ?model= is given. localhost counts as a secure context, so WebGPU
# and the Cache API work without https.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
port="${1:-8080}"
bash "$root/scripts/build-web.sh"
echo "serving http://127.0.0.1:$port/ (Ctrl-C stops)"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory "$root/web/www"
