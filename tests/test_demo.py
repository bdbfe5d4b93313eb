"""`nakhon demo` end to end as a user runs it: embedded broker, SQLite store, simulated city, a summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from collectors.sinks.sqlite import SQLiteSink


def test_demo_runs_for_a_duration_and_stores_every_feed(tmp_path: Path) -> None:
    env = {**os.environ, "NAKHON_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "nakhon.cli", "demo", "--duration", "8", "--rate", "60", "--devices", "80",
         "--no-live"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "admin API token" in out and "/docs" in out
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"│ (.+?)\s+│\s+(\d+) │", out)}
    published = counts["published (simulated city)"]
    assert published > 100
    assert counts["acknowledged by the broker"] == published
    stored = sum(counts[f"stored · {feed}"] for feed in ("air", "flood", "energy", "bus"))
    quarantined = sum(v for k, v in counts.items() if k.startswith("quarantined · "))
    assert stored + quarantined == published  # every message ended stored or quarantined
    assert quarantined >= 1  # the simulated city sends ~1 % malformed messages
    store = SQLiteSink(tmp_path / "data" / "timeseries.db")
    for measurement in ("air_quality", "water_level", "energy", "bus"):
        assert store.count(measurement) > 0
