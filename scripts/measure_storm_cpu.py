"""CPU per reading of the collector's ingest path in process: calm against storm backlogs, no broker, no InfluxDB.

    .venv/bin/python scripts/measure_storm_cpu.py --scenario haze --messages 100000 --rounds 3 --out haze.json

The storm bench (`nakhon bench --scenario ...`) measures drains end to end on real servers, where the VM and the
servers sharing its two cores move a single drain's rate by a third. This script takes those away to see what a
storm reading costs the collector's own code: the real pipeline (native format, validation, enrichers), a batch
writer whose sink encodes every batch to line protocol (in a thread, as the InfluxDB sink does) and drops it,
the shipped rules and routing on a SQLite alert store, wired as `nakhon run` wires them, all in one event loop.
Per round (fresh devices for each backlog, as in the bench): the scenario's calm backlog, then its storm
backlog, each submitted with at most `--window` messages unacknowledged (the transport's receive maximum), and
timed until every message is acknowledged (stored and evaluated). It reports CPU seconds of the whole process
(every thread) per reading and the wall-clock rate, per phase, and the storm / calm CPU ratio per round.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.storm import SCENARIO_SPECS, _messages, calm_backlog
from collectors.directory import StaticDirectory
from collectors.domain import default_enrichers
from collectors.formats import make_format
from collectors.lineprotocol import encode_batch
from collectors.mapping import FieldMapper
from collectors.mapping.profiles import builtin_profiles
from collectors.pipeline import Input, Pipeline
from collectors.quarantine import QuarantineStore
from collectors.sinks.writer import BatchWriter
from core.model import DeviceInfo, Point
from nakhon.app import alert_points_to, tune_garbage_collector
from nakhon.sim.city import City, SimDevice
from rules.service import ReadingQueue, build_rules_service
from rules.settings import RulesSettings


class EncodingSink:
    """Encodes each batch to line protocol in a worker thread, as the InfluxDB sink does, and keeps a count."""

    name = "encode-only"

    def __init__(self) -> None:
        self.points = 0

    async def write(self, points: Sequence[Point]) -> None:
        await asyncio.to_thread(encode_batch, points)
        self.points += len(points)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def _info(d: SimDevice) -> DeviceInfo:
    return DeviceInfo(d.device_id, d.feed, d.city, d.district, name=d.name, lat=d.lat, lon=d.lon, site=dict(d.site))


class GcTimer:
    """Collections per generation and the seconds they took (gc.callbacks), since `reset()`."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            generation = info["generation"]
            self.counts[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._t0

    def reset(self) -> None:
        self.counts, self.seconds = [0, 0, 0], [0.0, 0.0, 0.0]


GC = GcTimer()


async def _phase(pipeline: Pipeline, messages: list[tuple[str, bytes]], window: int) -> dict[str, Any]:
    pending: deque[asyncio.Future[None]] = deque()
    GC.reset()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, (topic, payload) in enumerate(messages, 1):
        pending.append(pipeline.submit(topic, payload, time.time_ns()))
        while len(pending) >= window:
            await pending.popleft()
        if i % 256 == 0:
            await asyncio.sleep(0)  # the transport yields to the loop between reads too
    while pending:
        await pending.popleft()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"seconds": round(wall, 3), "msgs_per_s": round(len(messages) / wall, 1),
            "cpu_us_per_msg": round(cpu / len(messages) * 1e6, 2),
            "gc_collections": list(GC.counts), "gc_us_per_msg": round(sum(GC.seconds) / len(messages) * 1e6, 2),
            "gc_seconds_by_generation": [round(x, 3) for x in GC.seconds]}


async def run(scenario: str, messages: int, stations: int, rounds: int, window: int, workdir: Path,
              control: bool = False) -> dict[str, Any]:
    spec = SCENARIO_SPECS[scenario]
    storm_fields = calm_backlog if control else spec.storm
    city = City()
    per_feed = max(1, stations // len(spec.feeds))
    sets = [[city.device(f, (2 * r + j) * per_feed + i) for f in spec.feeds for i in range(per_feed)]
            for r in range(rounds) for j in (0, 1)]
    devices = [_info(d) for s in sets for d in s]
    sink = EncodingSink()
    writer = BatchWriter(sink, None, max_batch_points=5000, flush_interval_s=0.25)
    quarantine = QuarantineStore(workdir / "quarantine.db")
    settings = RulesSettings.model_validate({"database_url": f"sqlite:///{workdir / 'alerts.db'}"})
    readings = ReadingQueue(maxsize=settings.queue_size)
    rules = build_rules_service(settings, alert_points_to(writer), devices=lambda: devices, queue=readings)
    pipeline = Pipeline(inputs=[Input(["city/+/+/+"], make_format("native", prefix="city"))],
                        directory=StaticDirectory(devices), writer=writer, quarantine=quarantine,
                        mapper=FieldMapper(), profiles=dict(builtin_profiles()), enrichers=default_enrichers(),
                        readings_out=readings)
    await writer.start()
    await rules.start()
    rules.start_consuming()
    tune_garbage_collector()
    out: list[dict[str, Any]] = []
    try:
        for r in range(rounds):
            row: dict[str, Any] = {}
            for phase, devs, fields in (("calm", sets[2 * r], calm_backlog),
                                        ("storm", sets[2 * r + 1], storm_fields)):
                per_device = max(1, messages // len(devs))
                backlog = [(t, p) for t, p, _ in _messages(devs, per_device, spec.span_s, fields)]
                row[phase] = await _phase(pipeline, backlog, window)
                print(f"{scenario} round {r + 1} {phase}: {row[phase]}", file=sys.stderr, flush=True)
            row["storm_to_calm_cpu_per_msg"] = round(row["storm"]["cpu_us_per_msg"] / row["calm"]["cpu_us_per_msg"], 3)
            out.append(row)
    finally:
        await rules.stop()
        await writer.close()
        await quarantine.close()
    ratios = [r["storm_to_calm_cpu_per_msg"] for r in out]
    return {"scenario": scenario, "control": control, "messages_per_phase": messages, "stations": stations,
            "window": window, "rounds": out, "storm_to_calm_cpu_per_msg_median": round(statistics.median(ratios), 3),
            "points_encoded": sink.points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIO_SPECS), default="haze")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=10_000,
                        help="messages unacknowledged at most (the shipped mqtt.receive_maximum)")
    parser.add_argument("--control", action="store_true",
                        help="the storm phase replays calm readings on its own devices (the scenario's feeds)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nakhon-storm-cpu-") as tmp:
        result = asyncio.run(run(args.scenario, args.messages, args.stations, args.rounds, args.window, Path(tmp),
                                 args.control))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
