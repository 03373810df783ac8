#!/usr/bin/env bash
# Installs what lottery needs on a fresh Debian/Ubuntu machine without a GPU:
# Mesa's software Vulkan (lavapipe) and GL (llvmpipe) drivers. On Debian 12 we
# take Mesa from bookworm-backports (25.x) because it is 3-7x faster than 22.3.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if command -v apt-get >/dev/null 2>&1; then
  if grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo 'deb http://deb.debian.org/debian bookworm-backports main' | $SUDO tee /etc/apt/sources.list.d/lottery-backports.list >/dev/null
    fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 libegl1 libgl1-mesa-dri libegl-mesa0 >/dev/null \
      || $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 libegl1 libgl1-mesa-dri >/dev/null
  else
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 libegl1 libgl1-mesa-dri >/dev/null
  fi
else
  echo "setup-system: no apt-get; install your platform's Vulkan driver (or Mesa lavapipe) yourself" >&2
fi
