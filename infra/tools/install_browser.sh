#!/usr/bin/env bash
# Install what the dashboard's browser test needs: Debian's chromium and CJK fonts
# (apt, only when chromium is missing) and the Python playwright package (pip, into
# the project's venv). Never `playwright install`: it downloads its own browser
# builds, which this project does not use (the test drives Debian's chromium).
# Idempotent; prints what it does. Usage: infra/tools/install_browser.sh [VENV]
set -euo pipefail
venv="${1:-.venv}"

if command -v chromium >/dev/null 2>&1; then
  echo "install_browser: chromium present ($(command -v chromium))"
else
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: chromium is missing and apt-get needs root; run as root:" >&2
    echo "  apt-get update && apt-get install -y chromium fonts-noto-cjk" >&2
    exit 1
  fi
  echo "install_browser: apt-get install chromium fonts-noto-cjk"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-cjk
fi
if ! dpkg -s fonts-noto-cjk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "install_browser: apt-get install fonts-noto-cjk"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-noto-cjk
  else
    echo "install_browser: fonts-noto-cjk missing (Japanese renders as boxes); install as root" >&2
  fi
fi

if "$venv/bin/python" -c "import playwright" 2>/dev/null; then
  echo "install_browser: playwright present in $venv"
else
  echo "install_browser: pip install playwright into $venv"
  "$venv/bin/python" -m pip install --quiet "playwright>=1.50,<2"
fi
