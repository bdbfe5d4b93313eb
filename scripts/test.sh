#!/usr/bin/env bash
# The test suite against real servers (Mosquitto, InfluxDB, Prometheus, PostgreSQL) that the tests start
# themselves on free loopback ports. Installs what it needs first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/mypy core collectors gateway rules nakhon bench dashboards
.venv/bin/lint-imports --no-cache  # the layering contract in pyproject.toml ([tool.importlinter])
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
