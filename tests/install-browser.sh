#!/usr/bin/env bash
# Installs headless Chromium (Debian package `chromium`) for the tests that check HTML pages
# in a real browser (tests/test_thumbnails.py). Needs root (or sudo).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(command -v chromium)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# another apt on the machine (an upgrade, another checkout's install) holds the lock: wait for it, up to 10 min
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium installed: $(command -v chromium)"
