"""CPU time of one diagnostics hand-over (`RecentMessages.record`) at drain size: `--devices` devices × 20 messages
each, on a file SQLite registry that already holds 20 rows per device (steady state: every flush inserts and
trims as many rows as it keeps). Select the code with PYTHONPATH (a `git archive` tree), as measure_calm_steps.py
does, and run it from a directory without a `gateway/` package:

    cd /tmp && PYTHONPATH=/tmp/base /path/to/.venv/bin/python /path/to/scripts/measure_recent_flush.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from core.model import RecentMessage
from gateway.registry import RegistryStore

PAYLOAD = '{"pm25": 10.0, "pm10": 20.1, "temp_c": 28.5, "rh": 66, "ts": 1764000000000}'


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--flushes", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = RegistryStore(f"sqlite:///{tmp}/registry.db")
        store.db.migrate()
        t0 = time.time_ns()
        cpu_ms = []
        for flush in range(args.flushes + 1):
            batch = {
                f"dev-{d:04d}": [RecentMessage(f"city/cm/air/dev-{d:04d}", PAYLOAD, True, None,
                                               t0 + flush * 10**9 + i * 1000) for i in range(20)]
                for d in range(args.devices)
            }
            started = time.process_time()
            store.recent.record(batch)
            if flush:  # the first fills the table
                cpu_ms.append((time.process_time() - started) * 1000)
        assert len(store.recent.of("dev-0000", limit=100)) == 20
        store.db.close()
    print(json.dumps({"rows_per_flush": args.devices * 20, "cpu_ms_per_flush": [round(x, 1) for x in cpu_ms],
                      "median_ms": round(statistics.median(cpu_ms), 1)}))


if __name__ == "__main__":
    main()
