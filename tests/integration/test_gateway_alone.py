"""`nakhon run gateway` on its own (the engine runs with the collectors): the alerts API is still served,
from the alert store the engine writes, and acknowledging there is seen by the store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from nakhon.app import start_app
from nakhon.config import load_settings
from rules.store import AlertStore
from tests.servers import free_port


async def test_gateway_alone_serves_alerts_from_the_shared_store(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data", metrics={"port": 0})
    port = free_port()
    running = await start_app(settings, "gateway", gateway_port=port)
    try:
        assert running.rules is None and running.collector is None
        _, token = await asyncio.to_thread(running.registry.tokens.create, "op", "operator", actor="test")
        # an alert as the engine in another process would have written it
        store = AlertStore(settings.registry.url)
        now = time.time_ns()
        alert, _created = store.open_alert(
            rule="bus_child_left", device_id="van-1", city="laem-chabang", district="บ่อวิน", feed="bus",
            severity="critical", state="firing", t_ns=now, value=1.0, threshold=0.0,
            message_th="เด็กตกค้างในรถ", message_en="child left on the bus",
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1",
                                     headers={"Authorization": f"Bearer {token}"}) as api:
            listed = await api.get("/alerts")
            assert listed.status_code == 200, listed.text
            assert [a["id"] for a in listed.json()] == [alert.id]  # the alerts API answers a list
            acked = await api.post(f"/alerts/{alert.id}/ack", json={"comment": "on my way"})
            assert acked.status_code == 200, acked.text
        again = store.get(alert.id)
        assert again is not None and again.ack_by is not None and again.ack_comment == "on my way"
        store.close()
    finally:
        await running.stop()

