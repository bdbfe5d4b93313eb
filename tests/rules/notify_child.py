"""The rules service in its own process, for the kill tests (tests/rules/notify/test_notify_faults.py):

    python -m tests.rules.notify_child DB_URL ROUTING_FILE [--fire N]

Starts the service (which resumes whatever the outbox owes), optionally fires N alerts (one per device, so one
message each per receiver), prints "ready" and runs until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from core.model import DeviceInfo
from rules.service import build_rules_service
from rules.settings import RulesSettings


async def main(db_url: str, routing: str, fire: int) -> None:
    settings = RulesSettings(
        database_url=db_url,
        routing_file=Path(routing),
        retry_initial_backoff_s=0.2,
        retry_max_backoff_s=1.0,
        notify_timeout_s=3.0,  # a lease left by a kill mid-attempt runs out 3 s + margin later
        ack_link_secret="k" * 40,  # type: ignore[arg-type]
    )
    service = build_rules_service(settings, None)
    await service.start()
    for i in range(fire):
        device = DeviceInfo(device_id=f"P.{i}", feed="flood", city="chiangmai", district="mueang", name=f"Gauge {i}")
        await service.engine.lifecycle.open(
            rule="flood_level_overbank",
            severity="critical",
            device=device,
            t_ns=service.engine.clock.now_ns(),
            firing=True,
            value=104.0 + i,
            threshold=100.0,
            message_th=f"น้ำล้นตลิ่ง P.{i}",
            message_en=f"Overbank at P.{i}",
            labels={},
        )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    n = int(args[args.index("--fire") + 1]) if "--fire" in args else 0
    asyncio.run(main(args[0], args[1], n))
