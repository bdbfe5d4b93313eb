"""`nakhon bench-notify` end to end with a few probes and a light background: every trigger produced exactly one
firing notification at the webhook, and the JSON is complete.

No timing assertions: the latency target is checked by the benchmark (bench/README.md), never by tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import bench_notify
from bench.notify import REQUIRED_KEYS


@pytest.mark.slow
def test_bench_notify_small_run_notifies_every_probe_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    bench_notify(probes=6, background_rate=100, devices=40, json_out=out, keep=False)
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result  # printed and written alike
    for key in REQUIRED_KEYS:
        assert key in result, f"missing {key}"
    for key in ("n", "p50", "p90", "p99", "max"):
        assert key in result["latency_ms"], f"missing latency_ms.{key}"
    for key in ("published", "acknowledged", "failed", "rate_requested_msgs_per_s"):
        assert key in result["background"], f"missing background.{key}"
    for key in ("publish_to_pipeline_submit", "pipeline_submit_to_webhook", "webhook_to_delivery_recorded"):
        assert key in result["stages_ms"], f"missing stages_ms.{key}"
    assert result["probes_sent"] == 6
    assert result["probes_acknowledged"] == 6
    assert result["notifications_received"] == 6  # one firing notification per trigger ...
    assert result["missing"] == 0
    assert result["duplicates"] == 0  # ... and only one
    assert result["latency_ms"]["n"] == 6
    assert result["details"]["webhook_posts_unmatched"] == 0
    assert result["background"]["published"] > 0
    assert result["background"]["failed"] == 0
    assert isinstance(result["target_met"], bool)
