"""Prometheus metrics of the ingest path: rates and counts live here, not in logs.

Names are part of the contract with `dashboards/` (the pipeline-health dashboard queries them).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class LoopCounter(Collector):
    """A labelled counter for the event loop's hot path: `inc` is a dict update, no lock (prometheus-client's
    Counter takes a mutex per increment, ~6 % of the collector's CPU at 10,000 msg/s). Only the event-loop
    thread increments it; the value is read at scrape time."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.values: dict[str, int] = {}
        REGISTRY.register(self)

    def inc(self, label_value: str) -> None:
        self.values[label_value] = self.values.get(label_value, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in list(self.values.items()):
            family.add_metric([value], count)
        yield family


MESSAGES_RECEIVED = LoopCounter("nakhon_messages_received", "MQTT messages received by the collectors", "feed")
POINTS_STORED = Counter(
    "nakhon_points_stored", "Points durably stored (in the sink or the disk spool), by feed (or `alerts`)", ["feed"]
)
MESSAGES_QUARANTINED = Counter(
    "nakhon_messages_quarantined", "Messages rejected and kept in quarantine", ["feed", "reason"]
)
SINK_WRITE_SECONDS = Histogram(
    "nakhon_sink_write_seconds",
    "Time to write one batch to a sink",
    ["sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SINK_POINTS_WRITTEN = Counter("nakhon_sink_points_written", "Points accepted by a sink", ["sink"])
SINK_WRITE_ERRORS = Counter("nakhon_sink_write_errors", "Failed batch writes by sink and kind", ["sink", "kind"])
SINK_UP = Gauge("nakhon_sink_up", "1 when the sink answered its last write or ping", ["sink"])
SPOOL_DEPTH_POINTS = Gauge("nakhon_spool_depth_points", "Points waiting in the disk spool for the sink")
SPOOL_BYTES = Gauge("nakhon_spool_bytes", "Bytes used by the disk spool")
SPOOL_FULL = Gauge("nakhon_spool_full", "1 when the disk spool reached its size limit (an error state)")
MQTT_CONNECTED = Gauge("nakhon_mqtt_connected", "1 while the collector is connected to the MQTT broker")
PENDING_MESSAGES = Gauge("nakhon_pending_messages", "Messages received but not yet acknowledged to the broker")
ACK_DELAY_SECONDS = Histogram(
    "nakhon_ack_delay_seconds",
    "From receipt of a message to its PUBACK, i.e. until its data (or quarantine record) was durable",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
MQTT_CONNECT_ATTEMPTS = Counter(
    "nakhon_mqtt_connect_attempts", "MQTT connection attempts by outcome (ok, refused, unreachable)", ["outcome"]
)
MQTT_CONNECT_REFUSED = Counter(
    "nakhon_mqtt_connect_refused", "CONNACK refusals by the broker, by reason code (e.g. 0x87 not authorised)",
    ["code"],
)
MQTT_SESSION_LOST = Counter(
    "nakhon_mqtt_session_lost",
    "Connections where the broker reported no session although we had one: what it held for us is gone",
)
MQTT_SESSION_TAKEN_OVER = Counter(
    "nakhon_mqtt_session_taken_over", "Times another connection with our client id took our session (DISCONNECT 0x8E)"
)
MQTT_DISCONNECTS = Counter("nakhon_mqtt_disconnects", "Connections lost, by reason", ["reason"])
MQTT_TOO_LARGE = Counter(
    "nakhon_mqtt_too_large", "MQTT messages whose payload exceeded mqtt.max_payload_bytes (quarantined truncated)"
)
