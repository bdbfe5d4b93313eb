"""The small stages on their own: grouping (worst first), suppression (quiet hours), the webhook payload v1 through
a real HTTP receiver, and `nakhon alerts notifications --failed`."""

from __future__ import annotations

from datetime import datetime

from typer.testing import CliRunner

from rules.acklink import AckLinkSigner
from rules.notify.base import PermanentNotifyError, RetryableNotifyError
from rules.notify.grouping import worst_first
from rules.notify.memory import MemoryNotifier
from rules.notify.payload import PAYLOAD_VERSION
from rules.notify.pipeline import NotificationPipeline, build_notifiers
from rules.notify.render import Renderer
from rules.notify.retry import RetryPolicy
from rules.notify.routing import Router, parse_routing
from rules.notify.suppress import Suppressor
from rules.store import Alert, AlertStore
from tests.rules.conftest import T0, bkk, device
from tests.rules.notify.test_pipeline import fire
from tests.rules.receivers import WebhookServer
from tests.rules.test_cli import shell


def alert(value: float | None, threshold: float | None, severity: str = "warning", id_: str = "a") -> Alert:
    return Alert(id_, "r", "d", "c", "x", "air", severity, "firing", value, threshold, "", "", {}, T0, T0, None, T0)


def test_worst_first_puts_severity_first_then_distance_past_the_threshold() -> None:
    high = [alert(150, 101, id_="a150"), alert(250, 101, id_="a250"), alert(120, 101, id_="a120")]
    assert [a.id for a in worst_first(high)] == ["a250", "a150", "a120"]
    low = [alert(15, 20, id_="b15"), alert(5, 20, id_="b5")]  # a `<` rule (low battery): lower is worse
    assert [a.id for a in worst_first(low)] == ["b5", "b15"]
    mixed = [alert(300, 101, id_="warn"), alert(102, 101, "critical", id_="crit")]
    assert [a.id for a in worst_first(mixed)] == ["crit", "warn"]


def test_quiet_hours_hold_warnings_at_night_in_bangkok_but_never_critical() -> None:
    routing = parse_routing("""
receivers: [{name: ops}]
route: {receiver: ops, quiet_hours: {start: "22:00", end: "07:00"}}
""")
    route = Router(routing).match({})[0]
    night, day = bkk(2026, 1, 6, 23, 30), bkk(2026, 1, 7, 9, 0)
    assert Suppressor.quiet(route, alert(1, 0), night) and not Suppressor.quiet(route, alert(1, 0), day)
    assert not Suppressor.quiet(route, alert(1, 0, "critical"), night)


async def test_webhook_payload_v1_is_structured_with_both_time_zones_and_signed_links(store: AlertStore, clock) -> None:
    with WebhookServer() as hook:
        routing = parse_routing(f"""
receivers:
  - {{name: flood-team, urls: ["json://127.0.0.1:{hook.port}/hook"], language: en}}
route: {{receiver: flood-team, group_by: [rule, city], group_wait: 0s, group_interval: 1s, repeat_interval: 0s}}
""")
        gauge = device("P.1", "flood", name="สะพานนวรัฐ")
        pipe = NotificationPipeline(
            routing,
            build_notifiers(routing),
            store,
            clock=clock,
            renderer=Renderer("https://nakhon.cm.go.th", ack_links=AckLinkSigner(b"s" * 32, 3600)),
            retry=RetryPolicy(timeout_s=5),
            device_lookup={"P.1": gauge}.get,
        )
        a = fire(store, "flood_level_overbank", "P.1", "flood", T0, "critical")
        await pipe.submit(a)
        await pipe.drain()
        clock.advance(5)
        resolved = store.resolve(a.id, clock.now_ns(), 90.0)
        assert resolved is not None
        await pipe.submit(resolved)
        await pipe.drain()
        await pipe.stop()
    firing, done = hook.received
    assert firing["version"] == PAYLOAD_VERSION == "1" and firing["schema"] == "nakhon.notification/v1"
    assert (firing["status"], firing["kind"], firing["receiver"]) == ("firing", "firing", "flood-team")
    assert firing["groupLabels"] == {"rule": "flood_level_overbank", "city": "chiangmai"}
    assert firing["commonLabels"]["severity"] == "critical" and "alert_id" not in firing["commonLabels"]
    # an English receiver's subject: English only, the alert's own summary
    assert firing["title"] == "[Critical] Alert: test flood_level_overbank · P.1"
    assert "test flood_level_overbank" in firing["message"]  # the human text too
    [fa] = firing["alerts"]
    assert {k: fa[k] for k in ("alert_id", "rule", "device_id", "device_name", "city", "district", "feed")} == {
        "alert_id": a.id,
        "rule": "flood_level_overbank",
        "device_id": "P.1",
        "device_name": "สะพานนวรัฐ",
        "city": "chiangmai",
        "district": "mueang",
        "feed": "flood",
    }
    assert (fa["severity"], fa["state"], fa["value"], fa["ended_at"]) == ("critical", "firing", 1.0, None)
    started_utc = datetime.fromisoformat(fa["started_at"])
    started_bkk = datetime.fromisoformat(fa["started_bangkok"])
    assert started_utc == started_bkk and started_utc.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert started_bkk.utcoffset().total_seconds() == 7 * 3600  # type: ignore[union-attr]
    assert fa["message_th"] == "ทดสอบ flood_level_overbank · P.1"
    assert fa["message_en"] == "test flood_level_overbank · P.1"
    assert f"/api/v1/alerts/{a.id}/ack-link?r=flood-team&" in fa["ack_url"] and "sig=" in fa["ack_url"]
    assert fa["silence_url"] == "https://nakhon.cm.go.th/api/v1/silences"
    assert fa["silence_matchers"] == ["rule=flood_level_overbank", "device_id=P.1"]
    [ra] = done["alerts"]
    assert (done["status"], ra["state"], ra["value"], ra["ack_url"]) == ("resolved", "resolved", 90.0, None)
    assert datetime.fromisoformat(ra["ended_bangkok"]).utcoffset().total_seconds() == 7 * 3600  # type: ignore[union-attr]


async def test_alerts_notifications_failed_lists_failed_and_still_failing(
    store: AlertStore, clock, pipeline_factory
) -> None:
    routing = """
receivers: [{name: ops}, {name: line}]
route:
  receiver: ops
  group_by: [rule, device_id]
  group_wait: 0s
  routes: [{match: {feed: bus}, receiver: line}]
"""
    ops = MemoryNotifier("ops", fail=[PermanentNotifyError("SMTP 550 mailbox unavailable")])
    line = MemoryNotifier("line", fail=[RetryableNotifyError("HTTP 503")] * 2)
    pipe, _ = pipeline_factory(routing, notifiers={"ops": ops, "line": line})
    failed = fire(store, "air_x", "a-1", "air", T0)
    ok = fire(store, "bus_x", "v-1", "bus", T0)
    await pipe.submit(failed)
    await pipe.submit(ok)
    await pipe.drain()
    await pipe.stop()
    out = CliRunner().invoke(shell(store), ["alerts", "notifications", "--failed"])
    assert out.exit_code == 0, out.output
    assert failed.id in out.output and "SMTP 550 mailbox unavailable" in out.output and "failed" in out.output
    assert ok.id not in out.output  # line recovered after two retries: sent
    everything = CliRunner().invoke(shell(store), ["alerts", "notifications"]).output
    assert ok.id in everything and "attempts=3" in everything


async def test_a_receiver_with_send_resolved_false_gets_the_firing_only(
    store: AlertStore, clock, pipeline_factory
) -> None:
    routing = """
receivers: [{name: ops, send_resolved: false}]
route: {receiver: ops, group_by: [rule, device_id], group_wait: 0s, group_interval: 1s, repeat_interval: 0s}
"""
    pipe, mem = pipeline_factory(routing)
    a = fire(store, "r", "d-1", "air", T0)
    await pipe.submit(a)
    await pipe.drain()
    clock.advance(5)
    await pipe.submit(store.resolve(a.id, clock.now_ns()))  # type: ignore[arg-type]
    await pipe.drain()
    assert [m.kind for m in mem["ops"].sent] == ["firing"]
    await pipe.stop()
