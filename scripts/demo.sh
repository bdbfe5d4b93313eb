#!/usr/bin/env bash
# The zero-setup demo: installs what it needs, then runs `nakhon demo` (extra arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/nakhon demo "$@"
