#!/usr/bin/env bash
# Install Debian's chromium for the headless browser test of the HTML report
# (tests/test_report_browser.py). Idempotent: does nothing when chromium is already there.
# Needs root (or sudo) and access to the Debian package mirror; exits non-zero otherwise,
# and the browser test then skips.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "install_chromium: not root and no sudo; cannot install chromium" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "chromium installed: $(chromium --version 2>/dev/null || echo unknown version)"
