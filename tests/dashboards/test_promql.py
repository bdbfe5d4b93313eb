"""Every PromQL query of every dashboard runs against a real Prometheus and returns data.

Prometheus (1 s scrapes) scrapes a running `nakhon run collectors` (real Mosquitto and InfluxDB, devices
registered, simulated readings and some bad messages published throughout, so rates, quarantine counters and
write-latency histograms move) and `tests/dashboards/rules_exporter.py`: the real rules service having
delivered one notification (the collector's own rules engine notifies nothing within a test's seconds, so
`nakhon_notifications_total` comes from that second target).
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from nakhon.sim.city import City
from nakhon.sim.signals import Simulation
from tests.dashboards.grafana import ALL, Query, expand, load_dashboards, queries
from tests.e2e.harness import CollectorProcess, InfluxServer, MosquittoServer, free_port, nakhon, write_config
from tests.publishing import AckingPublisher
from tests.servers import PrometheusServer

BOARDS = load_dashboards()
# the instance variable's `label_values(...)` is Grafana's, not PromQL: test_instance_variable_resolves_... runs it
PROM_QUERIES = [q for q in queries(BOARDS) if q.kind == "promql" and q.role != "variable"]
PUBLISH_S = 7.0


class Stack:
    def __init__(self, prometheus: PrometheusServer, collector: CollectorProcess, published: dict[str, int]) -> None:
        self.prometheus = prometheus
        self.collector = collector
        self.published = published

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def publish(port: int, devices: list[Any], stop_after_s: float, counts: dict[str, int]) -> None:
    sim = Simulation(devices, seed=3)
    publisher = AckingPublisher(port, client_id="promql-publisher")
    deadline = time.monotonic() + stop_after_s
    i = 0
    while time.monotonic() < deadline:
        device = devices[i % len(devices)]
        message = sim.message(device, int(time.time() * 1000))
        publisher.publish(message.topic, message.encode())
        counts["good"] += 1
        if i % 10 == 0:  # a bad message now and then: not JSON, and a device nobody registered
            publisher.publish(device.topic, b"{not json")
            publisher.publish(f"city/{device.city}/air/lcb-air-ghost-999", orjson.dumps({"pm25_ugm3": 12.0}))
            counts["bad"] += 2
        i += 1
        time.sleep(0.02)
    publisher.wait_all_acked(30)
    publisher.close()


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("promql")
    devices = City(seed=1).devices(8)
    with MosquittoServer(workdir) as broker, InfluxServer(workdir) as influx:
        metrics_port = free_port()
        config = write_config(workdir, mqtt_url=broker.url, influx_url=influx.url, metrics_port=metrics_port)
        csv_path = workdir / "devices.csv"
        csv_path.write_text(City(seed=1).registry_csv(devices), encoding="utf-8")
        nakhon(config, "devices", "import", str(csv_path))
        collector = CollectorProcess(config, metrics_port, workdir / "collector.log")
        rules_port = free_port()
        (workdir / "rules").mkdir()
        exporter = subprocess.Popen(
            [sys.executable, "-m", "tests.dashboards.rules_exporter", str(rules_port), str(workdir / "rules")],
            stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
        )
        try:
            collector.start()
            assert exporter.stdout is not None and exporter.stdout.readline().strip() == b"ready"
            targets = [f"127.0.0.1:{metrics_port}", f"127.0.0.1:{rules_port}"]
            with PrometheusServer(workdir, targets) as prometheus:
                counts = {"good": 0, "bad": 0}
                publisher = threading.Thread(target=publish, args=(broker.port, devices, PUBLISH_S, counts))
                publisher.start()
                publisher.join()
                s = Stack(prometheus, collector, counts)
                # enough scrapes for rate() over 1m windows, with samples from before and after the traffic
                wait_for(lambda: bool(s.query("count_over_time(nakhon_mqtt_connected[1m]) >= 8")
                                      and s.query("nakhon_notifications_total")), 30, "Prometheus scrapes")
                yield s
        finally:
            collector.stop()
            exporter.terminate()
            exporter.wait(10)


def test_every_metric_target_is_up(stack: Stack) -> None:
    up = {r["metric"]["instance"]: r["value"][1] for r in stack.query("up")}
    assert len(up) == 2 and set(up.values()) == {"1"}


def test_traffic_reached_the_collector(stack: Stack) -> None:
    assert stack.published["good"] > 50 and stack.published["bad"] > 5
    stored = stack.query("sum(nakhon_points_stored_total)")
    assert float(stored[0]["value"][1]) >= stack.published["good"]


@pytest.mark.parametrize("query", PROM_QUERIES, ids=lambda q: q.id)
def test_promql_query_returns_data(query: Query, stack: Stack) -> None:
    expr = expand(query.text, "promql", {"instance": ALL})
    result = stack.query(expr)
    assert result, f"no data for {query.id}: {expr}"
    values = [float(r["value"][1]) for r in result]
    assert any(not math.isnan(v) for v in values), f"only NaN for {query.id}: {expr}"


def test_instance_variable_resolves_to_the_collector(stack: Stack) -> None:
    [variable] = BOARDS["pipeline-health"]["templating"]["list"]
    assert variable["query"]["query"] == "label_values(nakhon_mqtt_connected, instance)"
    response = httpx.get(f"{stack.prometheus.url}/api/v1/label/instance/values",
                         params={"match[]": "nakhon_mqtt_connected"}, timeout=10).json()
    instances = response["data"]
    assert instances == [f"127.0.0.1:{stack.collector.metrics_port}"]
    # the collector's panels with the instance picked (not All) still find it
    for query in PROM_QUERIES:
        if query.role == "panel" and "nakhon_notifications" not in query.text and "nakhon_alerts" not in query.text:
            assert stack.query(expand(query.text, "promql", {"instance": instances})), query.id


def test_quarantine_rate_shows_both_reasons(stack: Stack) -> None:
    [query] = [q for q in PROM_QUERIES if "nakhon_messages_quarantined_total" in q.text]
    result = stack.query(expand(query.text, "promql", {"instance": ALL}))
    rates = {r["metric"]["reason"]: float(r["value"][1]) for r in result}
    assert set(rates) == {"bad_json", "unknown_device"} and all(v > 0 for v in rates.values())


def test_broker_connection_reads_connected(stack: Stack) -> None:
    [query] = [q for q in PROM_QUERIES if q.text.startswith("min(nakhon_mqtt_connected")]
    [result] = stack.query(expand(query.text, "promql", {"instance": ALL}))
    assert result["value"][1] == "1"
