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


def test_a_fresh_demo_tells_the_truth_one_incident_end_to_end(tmp_path: Path) -> None:
    """No false alerts at the start (no bus "silent" for minutes, no storm), and within the first minute one
    child-left alert, its message as the duty officer sees it, and its acknowledgement through the signed link;
    one canal gauge rising. Counts only: simulated time runs ×60 on one clock for the city and the rules."""
    env = {**os.environ, "NAKHON_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "240"}
    result = subprocess.run(
        [sys.executable, "-m", "nakhon.cli", "demo", "--duration", "50", "--no-live"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"│ (.+?)\s+│\s+(\d+) │", out)}
    alerts = {k.removeprefix("alerts · "): v for k, v in counts.items() if k.startswith("alerts · ")}
    assert not [rule for rule in alerts if rule.endswith("_silent")], alerts  # every device reports: none is silent
    assert alerts.get("bus_child_left") == 1, alerts
    assert alerts.get("flood_rising_fast", 0) + alerts.get("flood_level_high", 0) >= 1, alerts
    assert sum(alerts.values()) <= 5, alerts  # the incident, not a storm (was ~760 alert points in 40 s)
    assert counts["stored · alerts"] <= 15
    assert counts["acknowledged through the link"] == 1 and counts["acknowledged · link:duty-officer"] == 1
    assert counts["notifications to duty-officer"] >= 1
    # the message as the recipient sees it: Thai first, the count, the city's name, the signed link
    assert "ยังนับได้ 1 คน" in out and "1 child still on board" in out, out
    assert "แหลมฉบัง" in out and "Laem Chabang" in out and "/ack-link?r=duty-officer" in out
    assert "template" not in result.stderr and "bad operand" not in result.stderr
