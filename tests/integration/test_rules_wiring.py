"""The rules engine inside `nakhon run`, in-process: real Mosquitto, SQLite sink, registry API on a free port.

Bus readings (MQTT 5, QoS 1) with the ignition off and a child still counted on board, spanning more than the
rule's five minutes by their own `ts`, must raise `bus_child_left`: visible in the alerts API, written to the
sink as an `alerts` point, and acknowledgeable. An air station's PM2.5 raising the Thai AQI above 101 for over
an hour raises `air_aqi_th_unhealthy` the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from collectors.sinks.sqlite import SQLiteSink
from nakhon.app import start_app
from nakhon.config import load_settings
from nakhon.registry_wiring import import_devices_csv
from tests.publishing import AckingPublisher
from tests.servers import MosquittoServer, free_port

CSV = """device_id,feed,city,district,lat,lon,name
van-7,bus,chiangmai,mueang,18.79,98.98,School van 7
air-1,air,chiangmai,mueang,18.80,98.99,Air station 1
"""
MINUTE = 60.0


async def _until(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_rules_engine_wired_into_services(tmp_path: Path) -> None:
    with MosquittoServer(tmp_path) as broker:
        port = free_port()
        settings = load_settings(
            data_dir=tmp_path / "data",
            mqtt={"url": broker.url, "client_id": "it-rules-collector"},
            gateway={"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
            metrics={"port": 0},
        )
        summary = await asyncio.to_thread(import_devices_csv, settings, CSV)
        assert summary.startswith("2 created"), summary

        sink = SQLiteSink(tmp_path / "timeseries.db")
        running = await start_app(settings, "all", gateway_port=port, sink=sink)
        publisher: AckingPublisher | None = None
        try:
            assert running.rules is not None, "the composition root did not build the rules service"
            _, token = await asyncio.to_thread(running.registry.tokens.create, "it-admin", "admin", actor="test")
            headers = {"Authorization": f"Bearer {token}"}
            base = f"http://127.0.0.1:{port}/api/v1"

            publisher = await asyncio.to_thread(AckingPublisher, broker.port, client_id="it-rules-publisher")
            start = time.time() - 80 * MINUTE
            messages = [
                (
                    "city/chiangmai/bus/van-7",
                    json.dumps(
                        {
                            "ts": start + (70 + i) * MINUTE,
                            "lat": 18.79,
                            "lon": 98.98,
                            "speed_kmh": 0,
                            "ignition": False,
                            "occupancy": 1,
                        }
                    ).encode(),
                )
                for i in range(7)  # minutes 0..6 of the span: pending at 0, firing once 5 minutes have passed
            ]
            messages += [
                ("city/chiangmai/air/air-1", json.dumps({"ts": start + m * MINUTE, "pm25_ugm3": 80.0}).encode())
                for m in (0, 30, 65)  # Thai AQI > 200 held for over the rule's hour
            ]
            await asyncio.to_thread(publisher.publish_many, messages)
            assert await asyncio.to_thread(publisher.wait_all_acked, 30), "broker did not PUBACK every reading"
            assert not publisher.refused

            async with httpx.AsyncClient(headers=headers, timeout=10) as http:

                async def firing(rule: str) -> dict[str, Any] | None:
                    response = await http.get(f"{base}/alerts", params={"rule": rule})
                    assert response.status_code == 200, response.text
                    return next((a for a in response.json() if a["state"] == "firing"), None)

                alert = await _until(lambda: firing("bus_child_left"), "bus_child_left to fire")
                assert alert["device_id"] == "van-7" and alert["severity"] == "critical"
                assert alert["feed"] == "bus" and alert["city"] == "chiangmai"
                assert "School van 7" in alert["message_en"] and alert["ack_by"] is None

                aqi = await _until(lambda: firing("air_aqi_th_unhealthy"), "air_aqi_th_unhealthy to fire")
                assert aqi["device_id"] == "air-1" and aqi["value"] >= 101

                def alert_points() -> list[Any]:
                    return [
                        p
                        for p in sink.query("alerts", tags={"rule": "bus_child_left"})
                        if p.fields["alert_id"] == alert["id"]
                    ]

                points = await _until(alert_points, "the alert's points in the sink")
                assert [p.fields["state"] for p in points][:2] == ["pending", "firing"]
                assert points[0].tags["device_id"] == "van-7" and points[0].tags["severity"] == "critical"

                response = await http.post(f"{base}/alerts/{alert['id']}/ack", json={"comment": "ครูตรวจรถแล้ว"})
                assert response.status_code == 200, response.text
                acked = response.json()
                assert acked["ack_by"] == "it-admin" and acked["ack_comment"] == "ครูตรวจรถแล้ว"
                assert (await http.get(f"{base}/alerts/{alert['id']}")).json()["ack_at"] is not None

                # the router is guarded by the gateway's tokens
                assert (await http.get(f"{base}/alerts", headers={"Authorization": "Bearer nope"})).status_code == 401
        finally:
            if publisher is not None:
                await asyncio.to_thread(publisher.close)
            await running.stop()
            await sink.close()  # idempotent: the collector closed it already


def _settings(tmp_path: Path, **overrides: Any) -> Any:
    return load_settings(data_dir=tmp_path / "data", metrics={"port": 0}, **overrides)


def test_rules_settings_follow_nakhon_settings(tmp_path: Path) -> None:
    from nakhon.rules_wiring import rules_settings

    rules_dir, routes = tmp_path / "rules", tmp_path / "routes.yaml"
    settings = _settings(
        tmp_path,
        rules={"dir": str(rules_dir), "routes_file": str(routes), "queue_size": 7},
        gateway={"public_url": "https://nakhon.example.go.th"},
    )
    config = rules_settings(settings)
    assert config.database_url == settings.registry.url
    assert (config.rules_dir, config.routing_file) == (rules_dir, routes)
    assert config.public_url == "https://nakhon.example.go.th" and config.queue_size == 7
    defaults = rules_settings(_settings(tmp_path))
    assert defaults.rules_dir is None and defaults.routing_file is None  # shipped rules, log-only routing


async def test_runtime_offer_waits_when_the_queue_is_full(tmp_path: Path) -> None:
    """Backpressure, not loss: with the queue full, `offer` waits until the engine takes a reading."""
    from core.model import Reading
    from gateway.registry.directory import RegistryDirectory
    from nakhon.registry_wiring import open_registry
    from nakhon.rules_wiring import build_rules
    from rules.service import ReadingQueue

    settings = _settings(tmp_path, rules={"queue_size": 1})
    await asyncio.to_thread(import_devices_csv, settings, CSV)
    registry = await asyncio.to_thread(open_registry, settings)
    directory = RegistryDirectory(registry, start=False)
    points: list[Any] = []

    async def emit(point: Any) -> None:
        points.append(point)

    readings = ReadingQueue(maxsize=settings.rules.queue_size)
    runtime = await asyncio.to_thread(build_rules, settings, registry, directory, emit, readings)
    await runtime.start()
    try:
        van = directory.by_id("van-7")
        assert van is not None
        heartbeat_devices = runtime.engine.devices
        assert sorted(d.device_id for d in heartbeat_devices()) == ["air-1", "van-7"]
        await asyncio.to_thread(registry.devices.retire, "air-1", actor="test")
        directory.refresh()
        assert [d.device_id for d in heartbeat_devices()] == ["van-7"]  # only active devices are watched
        t0 = time.time_ns()

        def bus(minute: int) -> Reading:
            fields: dict[str, float | int | bool | str] = {"ignition": False, "occupancy": 2}
            return Reading("van-7", "bus", "chiangmai", "mueang", t0 + minute * 60 * 10**9, fields, {})

        await readings.offer(bus(0), van)  # fills the queue (the engine is not running yet)
        second = asyncio.ensure_future(readings.offer(bus(6), van))
        await asyncio.sleep(0.2)
        assert not second.done()  # waiting for room, not dropped
        runtime.start_consuming()
        await asyncio.wait_for(second, 10)
        await asyncio.wait_for(runtime.queue.join(), 10)
        assert [(p.tags["rule"], p.fields["state"]) for p in points] == [
            ("bus_child_left", "pending"),
            ("bus_child_left", "firing"),
        ]
    finally:
        await runtime.stop()
        directory.stop()
        registry.close()
