"""The scale-out path, as far as it runs here: two `nakhon run collectors` processes, configured only through
`NAKHON_MQTT__SHARED_GROUP=nakhon` and distinct `NAKHON_MQTT__CLIENT_ID`s, as members of one MQTT shared
subscription on a real Mosquitto, split a stream between them and together store every acknowledged message
exactly once in a real InfluxDB.

Mosquitto dispatches shared subscriptions round-robin, so this checks the split and exactly-once storage, not
per-device affinity (EMQX `hash_topic`, not available here: see deploy/SCALING.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.harness import NAKHON, CollectorProcess, InfluxServer, MosquittoServer, free_port, nakhon, write_config
from tests.publishing import AckingPublisher

CITY = "laem-chabang"
DEVICES = [(f"share-{feed}-{n}", feed) for feed in ("air", "flood") for n in range(4)]
FIELD = {"air": ("air_quality", "pm25_ugm3"), "flood": ("water_level", "level_m")}
N_MESSAGES = 2000
BASE_MS = 1_795_000_000_000


class EnvCollector(CollectorProcess):
    """A collector whose MQTT identity and group come from the environment, as in deploy/compose.scale.yaml."""

    def __init__(self, config: Path, metrics_port: int, log_path: Path, env: dict[str, str]) -> None:
        super().__init__(config, metrics_port, log_path)
        self.env = env

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen([*NAKHON, "--config", str(self.config), "run", "collectors"],
                                     stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        self.wait_healthy()

    def stored(self) -> float:
        """Readings this member stored (`alerts` points of its rules engine are counted apart, feed="alerts")."""
        found = re.findall(r'^nakhon_points_stored_total\{feed="(\w+)"\} (\S+)$', self.metrics(), re.M)
        return sum(float(v) for feed, v in found if feed in FIELD)


def message(i: int) -> tuple[str, bytes]:
    device_id, feed = DEVICES[i % len(DEVICES)]
    _, field = FIELD[feed]
    return f"city/{CITY}/{feed}/{device_id}", orjson.dumps({field: float(i % 50) + 0.5, "ts": BASE_MS + i})


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MosquittoServer, InfluxServer,
                                                                         list[EnvCollector]]]:
    workdir = tmp_path_factory.mktemp("shared")
    with MosquittoServer(workdir) as broker, InfluxServer(workdir) as influx:
        config = write_config(workdir, mqtt_url=broker.url, influx_url=influx.url)
        csv_path = workdir / "devices.csv"
        csv_path.write_text("device_id,feed,city,district,lat,lon,name\n" + "".join(
            f"{d},{f},{CITY},ศรีราชา,13.1,100.9,{d}\n" for d, f in DEVICES), encoding="utf-8")
        nakhon(config, "devices", "import", str(csv_path))
        collectors = []
        try:
            for n in (1, 2):
                port = free_port()
                data_dir = workdir / f"data-{n}"
                data_dir.mkdir()
                # the registry is shared (as on PostgreSQL); spool and quarantine are per replica
                env = {"NAKHON_MQTT__SHARED_GROUP": "nakhon", "NAKHON_MQTT__CLIENT_ID": f"nakhon-collector-{n}",
                       "NAKHON_METRICS__PORT": str(port), "NAKHON_DATA_DIR": str(data_dir),
                       "NAKHON_REGISTRY__URL": f"sqlite:///{workdir / 'data' / 'registry.db'}"}
                collector = EnvCollector(config, port, workdir / f"collector-{n}.log", env)
                collector.start()
                collectors.append(collector)
            yield broker, influx, collectors
        finally:
            for collector in collectors:
                collector.stop()


def stored_rows(influx: InfluxServer) -> list[tuple[str, int]]:
    rows = []
    for measurement, field in FIELD.values():
        rows += [(r["device_id"], int(r["time"]))
                 for r in influx.rows(f'SELECT "{field}", "device_id" FROM "{measurement}"', epoch="ns")]
    return rows


def test_two_members_split_the_stream_and_store_each_message_once(members) -> None:  # type: ignore[no-untyped-def]
    broker, influx, collectors = members
    publisher = AckingPublisher(broker.port, client_id="share-publisher")
    publisher.publish_many(message(i) for i in range(N_MESSAGES))
    assert publisher.wait_all_acked(60)
    publisher.close()
    acked = {(DEVICES[(orjson.loads(p)["ts"] - BASE_MS) % len(DEVICES)][0], orjson.loads(p)["ts"] * 1_000_000)
             for p in publisher.acked}
    assert len(acked) == N_MESSAGES

    deadline = time.monotonic() + 60
    rows: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        rows = stored_rows(influx)
        if len(rows) >= N_MESSAGES:
            break
        time.sleep(0.3)
    assert len(rows) == len(set(rows)), "a message was stored twice"
    assert set(rows) == acked

    per_member = [c.stored() for c in collectors]
    assert all(n > 0 for n in per_member), f"a member got nothing: {per_member}"
    assert sum(per_member) == N_MESSAGES, f"stored per member {per_member} should add up to {N_MESSAGES}"
    # Mosquitto shares round-robin: neither member should take nearly everything
    assert min(per_member) >= N_MESSAGES * 0.2, per_member
