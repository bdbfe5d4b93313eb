"""A stand-in Prometheus target for the rules engine's metrics, for the PromQL tests.

`nakhon run collectors` runs the rules engine, but within a test's few seconds and with the shipped log-only
routing (30 s group wait) it delivers no notification, so `nakhon_notifications_total` would have no sample.
This process runs the real rules service (`rules.settings`: shipped rules, the real notification pipeline
with a routing of group_wait 0 s, an in-memory receiver instead of LINE/e-mail), feeds it one reading that
fires `energy_demand_over_contract`, waits until the notification is delivered, and serves `/metrics`.

    python -m tests.dashboards.rules_exporter PORT WORKDIR
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from prometheus_client import start_http_server

from core.model import DeviceInfo, Reading
from rules.engine import offer
from rules.notify.memory import MemoryNotifier
from rules.service import build_rules_service
from rules.settings import RulesSettings

ROUTING = """
receivers:
  - {name: duty-engineer, language: both}
route:
  receiver: duty-engineer
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 4h
"""


async def main(port: int, workdir: Path) -> None:
    routing = workdir / "routing.yaml"
    routing.write_text(ROUTING)
    receiver = MemoryNotifier("duty-engineer")
    service = build_rules_service(
        RulesSettings.model_validate(
            {"database_url": f"sqlite:///{workdir / 'alerts.db'}", "routing_file": routing, "tick_interval_s": 0.2}
        ),
        emit_point=None,
        notifiers={"duty-engineer": receiver},
    )
    await service.start()
    task = asyncio.create_task(service.engine.run(service.queue))
    meter = DeviceInfo("em-1", "energy", "laem-chabang", "ศรีราชา", name="มิเตอร์ทดสอบ", site={"contracted_kw": 100.0})
    reading = Reading("em-1", "energy", "laem-chabang", "ศรีราชา", time.time_ns(), {"demand_15min_kw": 180.0},
                      {"tou": "on_peak"})
    offer(service.queue, reading, meter)
    deadline = time.monotonic() + 20
    while not receiver.sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if not receiver.sent:
        raise SystemExit("the rules service delivered no notification")
    start_http_server(port, addr="127.0.0.1")
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    task.cancel()
    await service.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
