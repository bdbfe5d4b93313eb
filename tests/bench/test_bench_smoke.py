"""`nakhon bench` end to end with a small message count: the JSON is complete and nothing acknowledged is lost.

No timing or throughput assertions: performance targets are checked by the benchmark (bench/README.md),
never by tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ingest import REQUIRED_KEYS


@pytest.mark.slow
def test_bench_small_run_is_complete_and_lossless(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "nakhon.cli", "bench", "--messages", "3000", "--devices", "40", "--publishers", "2",
         "--json-out", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"nakhon bench exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout) == result  # printed and written alike
    for key in REQUIRED_KEYS:
        assert key in result, f"missing {key}"
    for key in ("p50", "p99"):
        assert key in result["publish_to_stored_latency_ms"]
    for key in ("cores", "load_average_before", "load_average_after"):
        assert key in result["machine"]
    assert result["published"] == 3000
    assert result["acknowledged_by_broker"] == 3000
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    assert result["stored"] == result["acknowledged_by_broker"]
    assert result["details"]["broker_raw"]["received_by_mosquitto_sub"] == 3000
