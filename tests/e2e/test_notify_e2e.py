"""Notifications through `nakhon run collectors` in its own process, as the people on duty would see them: a real
Mosquitto, the SQLite sink, a real webhook receiver. The webhook fails while alerts fire, the process is SIGKILLed
mid-retry, the webhook recovers, the process restarts: every alert arrives exactly once, and while it was failing
`/healthz` and `/metrics` said so."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.e2e.harness import CollectorProcess, MosquittoServer, free_port, nakhon, write_config
from tests.publishing import AckingPublisher
from tests.rules.receivers import WebhookServer

CITY = "chiangmai"
GAUGES = [f"gauge-{i}" for i in range(3)]

RULE = """rules:
  - name: e2e_overbank
    feed: flood
    severity: critical
    when: {compare: {field: level_m, op: ">", value: 100}}
    clear: {compare: {field: level_m, op: "<", value: 50}}
    summary_th: "น้ำล้นตลิ่ง {{ device.name }}"
    summary_en: "Overbank at {{ device.name }}"
"""


def routing(port: int) -> str:
    return f"""receivers:
  - name: duty
    urls: ["json://127.0.0.1:{port}/hook"]
    language: en
    retry: {{initial: 200ms, max: 1s}}
route:
  receiver: duty
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 0s
"""


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_webhook_failing_through_a_sigkill_then_recovering_delivers_each_alert_once(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "e2e.yaml").write_text(RULE)
    with MosquittoServer(tmp_path) as broker, WebhookServer(status=500) as hook:
        routes = tmp_path / "routing.yaml"
        routes.write_text(routing(hook.port))
        metrics_port = free_port()
        config = write_config(
            tmp_path,
            mqtt_url=broker.url,
            metrics_port=metrics_port,
            extra=f'[rules]\ndir = "{rules_dir}"\nroutes_file = "{routes}"\n',
        )
        csv = tmp_path / "devices.csv"
        csv.write_text("device_id,feed,city,district,lat,lon,name\n" + "".join(
            f"{g},flood,{CITY},mueang,18.79,98.99,สะพาน {g}\n" for g in GAUGES
        ))
        nakhon(config, "devices", "import", str(csv))
        collector = CollectorProcess(config, metrics_port, tmp_path / "collector.log")
        collector.start()
        try:
            publisher = AckingPublisher(broker.port)
            for i, g in enumerate(GAUGES):
                publisher.publish(f"city/{CITY}/flood/{g}", orjson.dumps({"level_m": 150.0 + i}))
            wait_until(lambda: hook.hits >= 6, 30, "the webhook was tried and retried")

            def failing_in_health() -> bool:
                _, body = collector.health()
                return body["checks"]["notifications"]["failing_receivers"] == ["duty"]

            wait_until(failing_in_health, 10, "/healthz names the failing receiver")
            assert 'nakhon_notifications_failing{receiver="duty"} 1.0' in collector.metrics()
            collector.kill()  # mid-retry: three firing notifications owed
            assert hook.received == []

            hook.status = 200
            collector.start()
            wait_until(lambda: len(hook.received) >= 3, 30, "the owed notifications after the restart")
            for g in GAUGES:  # clear: a resolve for each, to the receiver that got the firing
                publisher.publish(f"city/{CITY}/flood/{g}", orjson.dumps({"level_m": 10.0}))
            wait_until(lambda: len(hook.received) >= 6, 30, "the resolves")
            assert collector.terminate() == 0  # a clean stop: nothing left owed, nothing sent again
            publisher.close()
        finally:
            collector.stop()
        out = nakhon(config, "alerts", "notifications").stdout
    states = sorted((a["device_id"], a["state"]) for body in hook.received for a in body["alerts"])
    assert states == sorted([(g, "firing") for g in GAUGES] + [(g, "resolved") for g in GAUGES])  # each once
    assert out.count(" sent ") == 6 and "retrying" not in out
