"""The ingest path end to end: real Mosquitto, real InfluxDB, `nakhon run collectors` in its own process.

At-least-once is checked the hard way: every message the publisher got a PUBACK for must be in InfluxDB
exactly once, with its content, after the collector is SIGKILLed mid-stream or InfluxDB is down for 10 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.harness import CollectorProcess, InfluxServer, MosquittoServer, free_port, nakhon, write_config
from tests.publishing import AckingPublisher

CITY = "laem-chabang"
FEEDS = {"air": ("air_quality", "pm25_ugm3"), "flood": ("water_level", "level_m"),
         "energy": ("energy", "power_kw"), "bus": ("bus", "speed_kmh")}
DEVICES = [(f"{feed}-{n:03d}", feed) for feed in FEEDS for n in range(5)]
BASE_MS = 1_795_000_000_000


def devices_csv() -> str:
    rows = ["device_id,feed,city,district,lat,lon,name"]
    rows += [f"{d},{f},{CITY},ทุ่งสุขลา,13.08,100.88,{d} ทดสอบ" for d, f in DEVICES]
    return "\n".join(rows) + "\n"


def message(i: int) -> tuple[str, bytes]:
    device_id, feed = DEVICES[i % len(DEVICES)]
    _, field = FEEDS[feed]
    value = float(i % 97) + 0.25  # in range for every feed's field
    return f"city/{CITY}/{feed}/{device_id}", orjson.dumps({field: value, "ts": BASE_MS + i})


def expected(payloads: list[bytes]) -> dict[tuple[str, int], float]:
    """(device_id, time_ns) -> value for each acknowledged payload."""
    by_payload = {}
    for raw in payloads:
        body = orjson.loads(raw)
        ts = body.pop("ts")
        [(_field, value)] = body.items()
        device_index = (ts - BASE_MS) % len(DEVICES)
        by_payload[(DEVICES[device_index][0], ts * 1_000_000)] = value
    return by_payload


def stored(influx: InfluxServer) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    for measurement, field in FEEDS.values():
        for row in influx.rows(f'SELECT "{field}", "device_id" FROM "{measurement}"', epoch="ns"):
            key = (row["device_id"], int(row["time"]))
            assert key not in out, f"stored twice: {key}"
            out[key] = row[field]
    return out


def total_points(influx: InfluxServer) -> int:
    return sum(influx.count(measurement, field) for measurement, field in FEEDS.values())


def wait_for_count(influx: InfluxServer, n: int, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    count = -1
    while time.monotonic() < deadline:
        try:
            count = total_points(influx)
        except Exception:
            count = -1
        if count >= n:
            return count
        time.sleep(0.3)
    return count


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[MosquittoServer, InfluxServer, Path, CollectorProcess]]:
    with MosquittoServer(tmp_path) as broker, InfluxServer(tmp_path) as influx:
        metrics_port = free_port()
        config = write_config(tmp_path, mqtt_url=broker.url, influx_url=influx.url, metrics_port=metrics_port)
        csv_path = tmp_path / "devices.csv"
        csv_path.write_text(devices_csv())
        nakhon(config, "devices", "import", str(csv_path))
        collector = CollectorProcess(config, metrics_port, tmp_path / "collector.log")
        collector.start()
        try:
            yield broker, influx, config, collector
        finally:
            collector.stop()


def publish_in_background(publisher: AckingPublisher, start: int, stop: int, pace_s: float) -> threading.Thread:
    thread = threading.Thread(
        target=publisher.publish_many, args=((message(i) for i in range(start, stop)),), kwargs={"pace_s": pace_s}
    )
    thread.start()
    return thread


@pytest.mark.slow
def test_collector_killed_mid_stream_loses_nothing_and_duplicates_nothing(stack) -> None:
    broker, influx, _config, collector = stack
    publisher = AckingPublisher(broker.port)
    first = publish_in_background(publisher, 0, 3000, pace_s=0.0005)
    time.sleep(0.8)
    collector.kill()  # mid-stream: messages in flight to the collector are unacknowledged
    first.join()
    publisher.publish_many(message(i) for i in range(3000, 4000))  # while it is down: the broker keeps them
    collector.start()
    publisher.publish_many(message(i) for i in range(4000, 6000))
    assert publisher.wait_all_acked(60)
    publisher.close()

    want = expected(publisher.acked)
    assert len(want) == 6000
    assert wait_for_count(influx, len(want)) == len(want)
    assert stored(influx) == want


@pytest.mark.slow
def test_influxdb_down_for_10s_spools_and_replays_everything(stack) -> None:
    broker, influx, _config, collector = stack
    publisher = AckingPublisher(broker.port)
    publisher.publish_many(message(i) for i in range(0, 1000))
    influx.stop()
    outage = publish_in_background(publisher, 1000, 3000, pace_s=0.004)  # ~8 s of traffic during the outage
    time.sleep(4)
    status, report = collector.health()
    assert status == 503 and report["checks"]["sink"]["ok"] is False
    assert "nakhon_spool_depth_points" in collector.metrics()
    outage.join()
    time.sleep(max(0.0, 10 - 4 - 8))
    spooled = [line for line in collector.metrics().splitlines() if line.startswith("nakhon_spool_depth_points ")]
    assert spooled and float(spooled[0].split()[1]) > 0
    influx.start()  # same port and data dir
    publisher.publish_many(message(i) for i in range(3000, 4000))
    assert publisher.wait_all_acked(60)
    publisher.close()

    want = expected(publisher.acked)
    assert len(want) == 4000
    assert wait_for_count(influx, len(want)) == len(want)
    assert stored(influx) == want
    collector.wait_healthy()


def test_sigterm_flushes_every_acknowledged_message(stack) -> None:
    broker, influx, _config, collector = stack
    publisher = AckingPublisher(broker.port)
    publisher.publish_many(message(i) for i in range(500))
    assert publisher.wait_all_acked(30)
    assert collector.terminate() == 0
    publisher.close()
    # nothing is read after the collector has exited: what it acknowledged must already be stored
    assert total_points(influx) == 500


def test_bad_messages_are_quarantined_listed_and_counted(stack) -> None:
    broker, _influx, config, collector = stack
    publisher = AckingPublisher(broker.port)
    publisher.publish(f"city/{CITY}/air/air-000", b'{"pm25_ugm3": 5000}')
    publisher.publish(f"city/{CITY}/air/nobody", b'{"pm25_ugm3": 5}')
    publisher.publish(f"city/{CITY}/air/air-000", b"not json")
    publisher.publish(*message(0))
    assert publisher.wait_all_acked(30)
    publisher.close()
    deadline = time.monotonic() + 10
    listed = ""
    while time.monotonic() < deadline:
        listed = nakhon(config, "quarantine", "list", "--json").stdout
        if len(listed.splitlines()) >= 3:
            break
        time.sleep(0.2)
    rows = [orjson.loads(line) for line in listed.splitlines()]
    assert sorted(r["reason"] for r in rows) == ["bad_json", "invalid_field", "unknown_device"]
    only_device = nakhon(config, "quarantine", "list", "--json", "--device", "air-000").stdout.splitlines()
    assert {orjson.loads(r)["reason"] for r in only_device} == {"bad_json", "invalid_field"}
    by_reason = nakhon(config, "quarantine", "list", "--json", "--reason", "unknown_device").stdout.splitlines()
    assert [orjson.loads(r)["topic"] for r in by_reason] == [f"city/{CITY}/air/nobody"]
    metrics = collector.metrics()
    assert 'nakhon_messages_quarantined_total{feed="air",reason="invalid_field"} 1.0' in metrics
    assert 'nakhon_messages_quarantined_total{feed="air",reason="unknown_device"} 1.0' in metrics


def test_health_turns_unhealthy_when_the_broker_is_down(stack) -> None:
    broker, _influx, _config, collector = stack
    broker.stop()
    deadline = time.monotonic() + 15
    status = 200
    while time.monotonic() < deadline and status == 200:
        status, report = collector.health()
        time.sleep(0.2)
    assert status == 503
    assert report["checks"]["broker"]["ok"] is False
    assert "nakhon_mqtt_connected 0.0" in collector.metrics()
    broker.start()
    collector.wait_healthy(30)


def test_bad_configuration_exits_non_zero_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, mqtt_url="mqtt://127.0.0.1:1883")
    result = nakhon(config, "config", "check", check=False, env={"NAKHON_INFLUXDB__BATCH_POINTS": "lots"})
    assert result.returncode == 2
    assert "influxdb.batch_points" in result.stderr and "NAKHON_INFLUXDB__BATCH_POINTS" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[mqtt]\nurl = "http://broker"\nfrobnicate = 1\n')
    result = nakhon(bad, "config", "check", check=False)
    assert result.returncode == 2
    assert "mqtt.url" in result.stderr and "mqtt.frobnicate: unknown key" in result.stderr


def test_config_check_masks_secrets_and_applies_environment(tmp_path: Path) -> None:
    config = write_config(tmp_path, mqtt_url="mqtt://collector:s3cret-pass@127.0.0.1:1883",
                          extra='[registry]\nurl = "postgresql+psycopg://nakhon:db-pass@db/nakhon"\n')
    result = nakhon(config, "config", "check", env={"NAKHON_INFLUXDB__PASSWORD": "influx-pass",
                                                     "NAKHON_INFLUXDB__DATABASE": "city_lc"})
    assert "s3cret-pass" not in result.stdout and "db-pass" not in result.stdout
    assert "influx-pass" not in result.stdout
    effective = orjson.loads(result.stdout)
    assert effective["mqtt"]["url"] == "mqtt://collector:***@127.0.0.1:1883"
    assert effective["influxdb"]["password"] == "***"
    assert effective["influxdb"]["database"] == "city_lc"
