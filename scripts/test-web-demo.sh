#!/usr/bin/env bash
# CI test of the browser demo: builds it, serves it, and drives it in headless
# Chromium (SwiftShader WebGPU, portable tier) through chromedriver:
# scripts/web-demo-check.py says what is checked. Screenshots go to target/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
bash scripts/build-web.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
web_port="$(free_port)"; drv_port="$(free_port)"
python3 -m http.server "$web_port" --bind 127.0.0.1 --directory web/www >/dev/null 2>&1 &
server=$!
chromedriver --port="$drv_port" >/dev/null 2>&1 &
driver=$!
trap 'kill $server $driver 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$drv_port/status" >/dev/null && curl -sf "http://127.0.0.1:$web_port/" >/dev/null && break
  sleep 0.2
done
mkdir -p target
python3 scripts/web-demo-check.py "http://127.0.0.1:$web_port/" "http://127.0.0.1:$drv_port" target
