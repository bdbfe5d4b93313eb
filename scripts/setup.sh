#!/usr/bin/env bash
# Set up nakhon on a fresh Debian/Ubuntu machine: apt packages (only what is missing) and the virtualenv.
#   bash scripts/setup.sh          # what the demo needs: Python venv only (embedded broker and store)
#   bash scripts/setup.sh --test   # plus the real servers the tests start: Mosquitto, InfluxDB, Prometheus, PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing apt packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then apt_install python3 python3-venv; fi
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "nakhon needs Python >= 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv; fi

if [ "$want_test" = 1 ]; then
  apt_install mosquitto mosquitto-clients influxdb prometheus postgresql
  apt_install chromium fonts-thai-tlwg  # the web console's browser tests (Playwright drives chromium; no download)
  # Debian starts these services on install; our tests start their own instances on free ports,
  # so the packaged ones are left as they are.
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
spec="."
[ "$want_test" = 1 ] && spec=".[test,bench]"  # the tests run the benchmarks too
stamp=".venv/.installed-$([ "$want_test" = 1 ] && echo test || echo base)"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e "$spec"
  touch "$stamp"
fi
