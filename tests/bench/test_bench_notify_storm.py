"""`nakhon bench-notify --storm-background flapping`: with an alert storm as the background (every background
reading a state change), every probe trigger still produces exactly one firing notification.

No timing assertions: the p99 target is checked by the benchmark (bench/README.md), never by tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import bench_notify


@pytest.mark.slow
def test_probes_are_notified_once_each_while_a_flapping_storm_runs(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    bench_notify(probes=6, background_rate=200, devices=40, json_out=out, keep=False,
                 storm_background="flapping")
    result = json.loads(out.read_text())
    assert result["background"]["storm"] == "flapping"
    assert result["background"]["published"] > 0 and result["background"]["failed"] == 0
    assert result["notifications_received"] == 6 and result["missing"] == 0 and result["duplicates"] == 0
    assert result["details"]["webhook_posts_unmatched"] == 0
