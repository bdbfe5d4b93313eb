"""`nakhon run collectors` as its own process on real Mosquitto (persistence really written) and InfluxDB:
SIGTERM under load, and a broker SIGKILL and restart. Readings carry no `ts`, so a redelivered message shows as
a second point: each stored point names its message (pm25 = number / 100)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.harness import CollectorProcess, InfluxServer, MosquittoServer, free_port, nakhon, write_config
from tests.faults.mqtt_helpers import durable_broker
from tests.publishing import AckingPublisher

CITY = "laem-chabang"
DEVICES = [f"air-f{n:02d}" for n in range(10)]


def reading(i: int) -> tuple[str, bytes]:
    return f"city/{CITY}/air/{DEVICES[i % len(DEVICES)]}", orjson.dumps({"pm25_ugm3": i / 100})


def number(payload: bytes) -> int:
    return round(orjson.loads(payload)["pm25_ugm3"] * 100)


def stored_numbers(influx: InfluxServer) -> Counter[int]:
    return Counter(round(row["pm25_ugm3"] * 100) for row in influx.rows('SELECT "pm25_ugm3" FROM "air_quality"'))


def wait_stored(influx: InfluxServer, want: set[int], timeout_s: float = 90.0) -> Counter[int]:
    deadline = time.monotonic() + timeout_s
    got: Counter[int] = Counter()
    while time.monotonic() < deadline:
        got = stored_numbers(influx)
        if set(got) >= want:
            time.sleep(1.0)  # and let any duplicate arrive too
            return stored_numbers(influx)
        time.sleep(0.3)
    return got


@pytest.fixture
def process_stack(tmp_path: Path, broker_workdir: Path) -> Iterator[tuple[MosquittoServer, InfluxServer,
                                                                            CollectorProcess]]:
    with durable_broker(broker_workdir, extra_conf="log_type notice") as broker, InfluxServer(tmp_path) as influx:
        metrics_port = free_port()
        config = write_config(tmp_path, mqtt_url=broker.url, influx_url=influx.url, metrics_port=metrics_port)
        rows = ["device_id,feed,city,district,lat,lon,name"] + [f"{d},air,{CITY},บ่อวิน,13.08,100.88,{d}"
                                                              for d in DEVICES]
        (tmp_path / "devices.csv").write_text("\n".join(rows) + "\n")
        nakhon(config, "devices", "import", str(tmp_path / "devices.csv"))
        collector = CollectorProcess(config, metrics_port, tmp_path / "collector.log")
        collector.start()
        try:
            yield broker, influx, collector
        finally:
            collector.stop()


@pytest.mark.slow
def test_sigterm_under_load_then_restart_stores_every_acknowledged_reading_once(process_stack) -> None:
    broker, influx, collector = process_stack
    publisher = AckingPublisher(broker.port, client_id="faults-term-pub")
    sending = threading.Thread(target=publisher.publish_many, args=([reading(i) for i in range(6000)],),
                               kwargs={"pace_s": 0.0005})
    sending.start()
    time.sleep(1.5)
    assert collector.terminate() == 0  # mid-stream
    collector.start()
    sending.join()
    assert publisher.wait_all_acked(60)
    publisher.close()
    want = {number(p) for p in publisher.acked}
    assert len(want) == 6000
    got = wait_stored(influx, want)
    assert set(got) == want
    assert {n: c for n, c in got.items() if c > 1} == {}  # nothing read before SIGTERM came back again


@pytest.mark.slow
def test_broker_sigkill_and_restart_reconnects_and_says_whether_the_session_survived(process_stack) -> None:
    broker, influx, collector = process_stack
    publisher = AckingPublisher(broker.port, client_id="faults-kill-pub")
    publisher.publish_many(reading(i) for i in range(1000))
    assert publisher.wait_all_acked(30)
    publisher.close()
    before = {number(p) for p in publisher.acked}
    assert set(wait_stored(influx, before)) == before
    broker.kill()
    deadline = time.monotonic() + 20
    while collector.health()[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, report = collector.health()
    assert status == 503 and report["checks"]["broker"]["reason"] in ("closed_by_broker", "unreachable")
    broker.start()  # same port and persistence dir
    collector.wait_healthy(60)
    publisher = AckingPublisher(broker.port, client_id="faults-kill-pub-2")
    publisher.publish_many(reading(i) for i in range(1000, 2000))
    assert publisher.wait_all_acked(30)
    publisher.close()
    after = {number(p) for p in publisher.acked}
    got = wait_stored(influx, before | after)
    assert set(got) == before | after  # resubscribed at once: nothing published after the restart is lost
    assert {n: c for n, c in got.items() if c > 1} == {}
    _, report = collector.health()
    if not (broker.dir / "mosquitto.db").exists():
        # the broker had not saved since the session began: it must have been said, not silent
        assert report["checks"]["broker"]["sessions_lost"] == 1
        assert "broker lost our session" in collector.log()


IMMEDIATE_RULE = """\
rules:
  - name: pm25_very_high
    feed: air
    severity: critical
    when:
      compare: {field: pm25_ugm3, op: ">", value: 100}
    summary_th: "PM2.5 สูงมาก {{ value }} ที่ {{ device.name }}"
    summary_en: "PM2.5 very high {{ value }} at {{ device.name }}"
"""


def open_alerts_of(database: Path, rule: str) -> list[tuple[str, str]]:
    with sqlite3.connect(database, timeout=30) as db:
        return list(db.execute("SELECT device_id, state FROM rules_alerts WHERE rule = ?", (rule,)))


@pytest.mark.slow
def test_sigkill_after_the_data_is_stored_but_before_its_evaluation_is_committed_loses_no_alert(
    tmp_path: Path, broker_workdir: Path,
) -> None:
    """Attack: the collector dies between the InfluxDB write and the commit of the reading's evaluation (the
    alert store is locked meanwhile, so the engine's commit waits). The message was not acknowledged, so the
    broker redelivers it to the restarted collector and the alert opens then; acknowledged on the write alone,
    the evaluation would be lost and no alert would ever open."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "air.yaml").write_text(IMMEDIATE_RULE)
    with durable_broker(broker_workdir, extra_conf="log_type notice") as broker, InfluxServer(tmp_path) as influx:
        metrics_port = free_port()
        config = write_config(tmp_path, mqtt_url=broker.url, influx_url=influx.url, metrics_port=metrics_port,
                              extra=f'[rules]\ndir = "{rules_dir}"\n')
        (tmp_path / "devices.csv").write_text(
            "device_id,feed,city,district,lat,lon,name\n" + f"{DEVICES[0]},air,{CITY},บ่อวิน,13.08,100.88,{DEVICES[0]}\n")
        nakhon(config, "devices", "import", str(tmp_path / "devices.csv"))
        database = tmp_path / "data" / "registry.db"
        collector = CollectorProcess(config, metrics_port, tmp_path / "collector.log")
        collector.start()
        try:
            lock = sqlite3.connect(database, isolation_level=None, timeout=30)
            lock.execute("BEGIN EXCLUSIVE")  # every writer waits: the engine's commit of the alert too
            publisher = AckingPublisher(broker.port, client_id="faults-eval-pub")
            publisher.publish_many([reading(15000)])  # pm25 150 µg/m³ on DEVICES[0]: the rule fires at once
            assert publisher.wait_all_acked(30)
            publisher.close()
            assert set(wait_stored(influx, {15000})) == {15000}  # the data is durable ...
            time.sleep(1.0)  # ... and an acknowledgement sent on the write alone would have gone out by now
            collector.kill()
            lock.execute("ROLLBACK")
            lock.close()
            assert open_alerts_of(database, "pm25_very_high") == []
            collector.start()
            deadline = time.monotonic() + 30
            while not open_alerts_of(database, "pm25_very_high") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert open_alerts_of(database, "pm25_very_high") == [(DEVICES[0], "firing")], collector.log()[-3000:]
        finally:
            collector.stop()
