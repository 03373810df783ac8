#!/usr/bin/env bash
# One-time setup for a fresh Linux machine: a Vulkan driver (Mesa lavapipe
# when there is no GPU) and the default model. Safe to re-run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 || ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
  bash "$here/setup-system.sh"
fi
bash "$here/fetch-model.sh" >/dev/null
bash "$here/fetch-minilm.sh" >/dev/null
