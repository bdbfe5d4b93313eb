"""The production shape end to end: Mosquitto with dynamic security (no anonymous access), `nakhon run` (all
services in one process) provisioning the collectors' account, a device registered through the HTTP API
publishing with its own credentials, its data in InfluxDB and its raw messages in the diagnostics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.registry.store import RegistryStore
from tests.e2e.harness import CollectorProcess, InfluxServer, MosquittoServer, free_port, write_config
from tests.publishing import AckingPublisher
from tests.servers import dynsec_mosquitto

ADMIN = ("nakhon-admin", "admin-pass-e2e")
COLLECTOR = ("nakhon-collector", "collector-pass-e2e")


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    with dynsec_mosquitto(tmp_path, *ADMIN) as server:
        yield server


def test_registered_device_publishes_with_its_own_credentials_and_lands(
    tmp_path: Path, secured_broker: MosquittoServer
) -> None:
    with InfluxServer(tmp_path) as influx:
        gateway_port, metrics_port = free_port(), free_port()
        config = write_config(
            tmp_path,
            mqtt_url=f"mqtt://{COLLECTOR[0]}:{COLLECTOR[1]}@127.0.0.1:{secured_broker.port}",
            influx_url=influx.url,
            metrics_port=metrics_port,
            gateway_port=gateway_port,
            gateway_extra=f'mqtt_admin_username = "{ADMIN[0]}"\nmqtt_admin_password = "{ADMIN[1]}"\n',
        )
        registry = RegistryStore(f"sqlite:///{tmp_path / 'data' / 'registry.db'}")
        registry.migrate()
        _record, token = registry.tokens.create("e2e-engineer", "engineer", actor="test")
        registry.close()

        service = CollectorProcess(config, metrics_port, tmp_path / "nakhon.log", component="all")
        service.start()  # the collectors' account is provisioned before they connect
        try:
            api = httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}/api/v1",
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
            created = api.post("/devices", json={
                "device_id": "flood-lc-01", "feed": "flood", "city": "laem-chabang", "district": "บ่อวิน",
                "name": "คลองบ่อวิน", "lat": 13.05, "lon": 101.0,
                "site": {"bank_level_m": 3.0, "ground_level_m": 0.0},
            })
            assert created.status_code == 201, created.text
            body = created.json()
            credentials = body["mqtt"]
            assert credentials["username"] == credentials["client_id"] == "device.flood-lc-01"

            publisher = AckingPublisher(secured_broker.port, client_id=credentials["client_id"],
                                        username=credentials["username"], password=credentials["password"])
            topic = "city/laem-chabang/flood/flood-lc-01"
            base_ms = 1_795_000_000_000
            for i in range(10):
                publisher.publish(topic, orjson.dumps({"level_m": 1.0 + i / 10, "ts": base_ms + i * 60_000}))
            publisher.publish(topic, b'{"level_m": "very high"}')
            # another device's topic: refused by the broker (MQTT 5 reason code 135), never stored
            publisher.publish("city/laem-chabang/flood/someone-else", orjson.dumps({"level_m": 9.9}))
            assert publisher.wait_all_acked(20)
            publisher.close()
            assert [code for _payload, code in publisher.refused] == [135]
            assert len(publisher.acked) == 11

            deadline = time.monotonic() + 30
            rows: list[dict] = []
            while time.monotonic() < deadline and len(rows) < 10:
                rows = influx.rows('SELECT "level_m", "level_pct_bank", "district" FROM "water_level"')
                time.sleep(0.3)
            assert len(rows) == 10, f"stored {len(rows)} of 10\n{service.metrics()}\n{service.log()[-3000:]}"
            assert {r["district"] for r in rows} == {"บ่อวิน"}
            assert rows[-1]["level_pct_bank"] == pytest.approx(63.333, abs=0.01)

            diagnostics: dict = {}
            deadline = time.monotonic() + 20  # the collectors hand diagnostics to the registry every 5 s
            while time.monotonic() < deadline:
                diagnostics = api.get("/devices/flood-lc-01/diagnostics").json()
                messages = diagnostics.get("recent_messages", [])
                if len(messages) >= 11:
                    break
                time.sleep(0.5)
            messages = diagnostics.get("recent_messages", [])
            assert len(messages) == 11
            rejected = [m for m in messages if not m["accepted"]]
            assert len(rejected) == 1 and "level_m" in rejected[0]["reason"]
        finally:
            service.stop()
