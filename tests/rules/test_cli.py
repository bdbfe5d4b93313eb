from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from rules.cli import alerts_app, rules_app
from rules.store import AlertStore
from tests.rules.conftest import T0

runner = CliRunner()


def shell(store: AlertStore) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = {"alerts_store": lambda: store}

    app.add_typer(alerts_app, name="alerts")
    app.add_typer(rules_app, name="rules")
    return app


def test_alerts_list_ack_and_silence(store: AlertStore) -> None:
    a, _ = store.open_alert(
        rule="bus_child_left",
        device_id="van-1",
        city="cm",
        district="m",
        feed="bus",
        severity="critical",
        state="firing",
        t_ns=T0,
        message_th="เด็กติดในรถ",
        message_en="child left",
    )
    app = shell(store)
    out = runner.invoke(app, ["alerts", "list", "--state", "firing"])
    assert out.exit_code == 0, out.output
    assert a.id in out.output and "เด็กติดในรถ" in out.output and "(Asia/Bangkok)" in out.output
    out = runner.invoke(app, ["alerts", "list", "--json"])
    assert json.loads(out.output.splitlines()[0])["id"] == a.id
    out = runner.invoke(app, ["alerts", "ack", a.id, "--by", "malee", "-c", "ok"])
    assert out.exit_code == 0 and store.get(a.id).ack_by == "malee"  # type: ignore[union-attr]
    assert runner.invoke(app, ["alerts", "ack", "nope"]).exit_code == 1
    out = runner.invoke(
        app, ["alerts", "silence", "add", "-m", "device_id=van-1", "-m", "severity=~crit.*", "-d", "30m"]
    )
    assert out.exit_code == 0, out.output
    sil = store.list_silences()[0]
    assert [m["value"] for m in sil.matchers] == ["van-1", "crit.*"]
    assert sil.id in runner.invoke(app, ["alerts", "silence", "list"]).output
    assert runner.invoke(app, ["alerts", "silence", "expire", sil.id]).exit_code == 0
    assert runner.invoke(app, ["alerts", "silence", "add", "-m", "bogus"]).exit_code == 2


def test_rules_check(tmp_path: Path, store: AlertStore) -> None:
    app = shell(store)
    out = runner.invoke(app, ["rules", "check", str(Path(__file__).parents[2] / "rules" / "defaults")])
    assert out.exit_code == 0 and "ok:" in out.output
    (tmp_path / "bad.yaml").write_text("rules:\n  - name: x\n    feed: air\n", encoding="utf-8")
    out = runner.invoke(app, ["rules", "check", str(tmp_path)])
    assert out.exit_code == 1 and "bad.yaml:2" in out.output


def _lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_rules_test_replay(tmp_path: Path, store: AlertStore) -> None:
    rows = [
        {
            "device_id": "van-7",
            "feed": "bus",
            "ts": f"2026-01-06T08:{m:02d}:00Z",
            "ignition": False,
            "occupancy": 2 if m < 9 else 0,
        }
        for m in range(0, 10, 1)
    ]
    replay = _lines(tmp_path / "bus.jsonl", rows)
    out = runner.invoke(shell(store), ["rules", "test", "bus_child_left", "--replay", str(replay)])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert [ln.split()[2] for ln in lines] == ["PENDING", "FIRING", "RESOLVED"]
    assert lines[0].startswith("2026-01-06 15:00:00+0700") and lines[1].startswith("2026-01-06 15:05:00+0700")
    out = runner.invoke(shell(store), ["rules", "test", "bus_child_left", "--replay", str(replay), "--json"])
    assert json.loads(out.output.splitlines()[1])["state"] == "firing"
    assert runner.invoke(shell(store), ["rules", "test", "nope", "--replay", str(replay)]).exit_code == 2


def test_rules_test_replay_heartbeat_with_devices_file(tmp_path: Path, store: AlertStore) -> None:
    devices = tmp_path / "devices.yaml"
    devices.write_text("- {device_id: g-1, feed: flood, city: cm, district: m, heartbeat_s: 600}\n", encoding="utf-8")
    rows = [
        {"device_id": "g-1", "ts": "2026-01-06T00:00:00Z", "level_m": 1.0},
        {"device_id": "g-1", "ts": "2026-01-06T00:30:00Z", "level_m": 1.0},
    ]
    replay = _lines(tmp_path / "g.jsonl", rows)
    out = runner.invoke(
        shell(store), ["rules", "test", "flood_device_silent", "--replay", str(replay), "--devices", str(devices)]
    )
    assert out.exit_code == 0, out.output
    states = [ln.split()[2] for ln in out.output.strip().splitlines()]
    assert states == ["FIRING", "RESOLVED"]


def test_a_second_acknowledgement_does_not_overwrite_the_first(store: AlertStore) -> None:
    a, _ = store.open_alert(
        rule="bus_child_left", device_id="van-1", city="c", district="d", feed="bus",
        severity="critical", state="firing", t_ns=T0,
    )  # fmt: skip
    first = runner.invoke(shell(store), ["alerts", "ack", a.id, "--by", "somchai", "-c", "ไปตรวจแล้ว"])
    assert first.exit_code == 0 and "acknowledged" in first.output and "(Asia/Bangkok)" in first.output
    second = runner.invoke(shell(store), ["alerts", "ack", a.id, "--by", "malee", "-c", "เด็กปลอดภัย"])
    assert second.exit_code == 0 and "already acknowledged by somchai" in second.output
    got = store.get(a.id)
    assert got is not None and got.ack_by == "somchai"
    assert got.ack_comment is not None and got.ack_comment.startswith("ไปตรวจแล้ว\nmalee (")
    assert got.ack_comment.endswith("): เด็กปลอดภัย")


def test_rules_test_rejects_an_offset_less_ts_as_the_collectors_do(tmp_path: Path, store: AlertStore) -> None:
    rows = [{"device_id": "van-7", "feed": "bus", "ts": "2026-01-06T08:00:00", "ignition": False, "occupancy": 2}]
    out = runner.invoke(
        shell(store), ["rules", "test", "bus_child_left", "--replay", str(_lines(tmp_path / "a.jsonl", rows))]
    )
    assert out.exit_code == 2 and "a.jsonl:1: bad_time" in out.output and "no UTC offset" in out.output
    rows[0]["ts"] = "2026-01-06T08:00:00+07:00"
    ok = runner.invoke(
        shell(store), ["rules", "test", "bus_child_left", "--replay", str(_lines(tmp_path / "b.jsonl", rows))]
    )
    assert ok.exit_code == 0 and "PENDING" in ok.output and ok.output.startswith("2026-01-06 08:00:00+0700")


def test_rules_test_replay_wider_than_the_step_keeps_the_child_count(tmp_path: Path, store: AlertStore) -> None:
    rows = [
        {
            "device_id": "van-7",
            "feed": "bus",
            "ts": f"2026-01-06T08:{m:02d}:00+07:00",
            "ignition": False,
            "occupancy": 3,
        }
        for m in (0, 4, 8)
    ]
    out = runner.invoke(
        shell(store),
        ["rules", "test", "bus_child_left", "--replay", str(_lines(tmp_path / "c.jsonl", rows)), "--step", "30s"],
    )
    firing = next(line for line in out.output.splitlines() if "FIRING" in line)
    assert "3 children still on board" in firing, out.output


def test_silence_start_typed_without_offset_is_bangkok_time(store: AlertStore) -> None:
    out = runner.invoke(
        shell(store), ["alerts", "silence", "add", "-m", "device_id=x", "--start", "2026-01-06T08:00", "-d", "1h"]
    )
    assert (
        out.exit_code == 0
        and "from 2026-01-06 08:00 (Asia/Bangkok) until 2026-01-06 09:00 (Asia/Bangkok)" in out.output
    )
