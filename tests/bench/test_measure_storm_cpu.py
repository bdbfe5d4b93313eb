"""`scripts/measure_storm_cpu.py` small: every reading of both backlogs goes through the real pipeline and rules to
the encoding sink, the storm opens alerts (their points are encoded too) and the calm control opens none.
Counts only: the CPU figures are the script's business, never asserted by a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "measure_storm_cpu.py"


def _measure(tmp_path: Path, *options: str) -> dict[str, object]:
    out = tmp_path / "cpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--scenario", "flood", "--messages", "400", "--stations", "20",
                           "--rounds", "1", "--out", str(out), *options],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result: dict[str, object] = json.loads(out.read_text())
    return result


@pytest.mark.parametrize("control", [False, True], ids=["flood-storm", "calm-control"])
def test_every_reading_of_both_backlogs_is_encoded_and_only_the_storm_adds_alert_points(
        tmp_path: Path, control: bool) -> None:
    result = _measure(tmp_path, *(["--control"] if control else []))
    (row,) = result["rounds"]  # type: ignore[misc]
    for phase in ("calm", "storm"):
        assert row[phase]["cpu_us_per_msg"] > 0 and len(row[phase]["gc_collections"]) == 3
    readings = 2 * 400
    if control:
        assert result["points_encoded"] == readings  # no alert: only the readings
    else:
        assert result["points_encoded"] > readings + 20  # every gauge's high and overbank alerts, as points
