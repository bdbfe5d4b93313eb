"""Measure the ingest fault scenarios of issue 16 on real Mosquitto and InfluxDB (not a test: figures).

    .venv/bin/python scripts/measure_ingest_faults.py refusals   # 20,000 conflicting + 20,000 valid readings
    .venv/bin/python scripts/measure_ingest_faults.py junk       # 2,000 × 1 MB payloads; 100,000 unknown ids

The collector runs in this process (build_collector, the production wiring); RSS is this process's, the
publisher's memory included (it keeps nothing after a PUBACK). The machine may be shared: compare within a run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.localservers import InfluxServer, MosquittoServer
from collectors.directory import StaticDirectory
from core.model import DeviceInfo
from nakhon.collector_wiring import build_collector
from nakhon.config import load_settings
from tests.publishing import AckingPublisher

CITY = "laem-chabang"
T0_MS = 1_795_000_000_000


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def count(influx: InfluxServer, measurement: str, field: str) -> int:
    response = httpx.get(f"{influx.url}/query", params={"db": "nakhon", "q": f'SELECT count("{field}") FROM '
                                                         f'"{measurement}"'}, timeout=30)
    series = response.json()["results"][0].get("series") or [{"values": [[0, 0]]}]
    return int(series[0]["values"][0][1])


async def refusals(work: Path) -> None:
    air = [DeviceInfo(f"air-{n:03d}", "air", CITY, "บ่อวิน") for n in range(100)]
    flood = [DeviceInfo(f"flood-{n:03d}", "flood", CITY, "บ่อวิน") for n in range(100)]
    with MosquittoServer(work) as broker, InfluxServer(work) as influx:
        httpx.post(f"{influx.url}/write", params={"db": "nakhon"},
                   content=f'air_quality,device_id=seed pm25_ugm3="a string first" {T0_MS * 1_000_000}'.encode())
        settings = load_settings(None, data_dir=work / "data", mqtt={"url": broker.url, "client_id": "m-refusals"},
                                 influxdb={"url": influx.url})
        collector = build_collector(settings, StaticDirectory(air + flood))
        await collector.start()
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
        messages = []
        for i in range(n):
            a, f = air[i % len(air)], flood[i % len(flood)]
            messages.append((f"city/{CITY}/air/{a.device_id}", orjson.dumps({"pm25_ugm3": 10.5, "ts": T0_MS + i})))
            messages.append((f"city/{CITY}/flood/{f.device_id}", orjson.dumps({"level_m": 1.5, "ts": T0_MS + i})))
        publisher = AckingPublisher(broker.port, client_id="m-refusals-pub", max_inflight=1000)
        started = time.monotonic()
        thread = threading.Thread(target=publisher.publish_many, args=(messages,))
        thread.start()
        valid_done = conflicts_done = None
        health_seen = set()
        while valid_done is None or conflicts_done is None:
            await asyncio.sleep(0.5)
            health_seen.add(collector.writer.health()["refusing"])
            if valid_done is None and await asyncio.to_thread(count, influx, "water_level", "level_m") >= n:
                valid_done = time.monotonic() - started
            quarantined = sum(c for _, reason, c in collector.quarantine.counts() if reason == "sink_rejected")
            if conflicts_done is None and quarantined >= n:
                conflicts_done = time.monotonic() - started
            if "-v" in sys.argv:
                print(list(collector.quarantine.counts()), collector.writer.health(), collector.subscriber.health())
            if time.monotonic() - started > 300:
                break
        thread.join()
        publish_s = time.monotonic() - started
        await collector.close()
        publisher.close()
        print(orjson.dumps({
            "scenario": "refusals", "conflicting": n, "valid": n,
            "valid_stored_s": valid_done, "conflicting_quarantined_s": conflicts_done,
            "publish_s": round(publish_s, 1), "healthz_reported_refusing": True in health_seen,
        }).decode())


async def junk(work: Path) -> None:
    devices = [DeviceInfo(f"air-{n:03d}", "air", CITY, "บ่อวิน") for n in range(200)]
    with MosquittoServer(work) as broker, InfluxServer(work) as influx:
        limits = (("default limit (256 KiB)", None), ("limit raised to 2 MiB", 2 * 1024 * 1024))
        label, max_payload = limits[int(sys.argv[2]) if len(sys.argv) > 2 else 0]
        data = work / f"data-{max_payload}"
        mqtt = {"url": broker.url, "client_id": f"m-junk-{max_payload}"}
        if max_payload:
            mqtt["max_payload_bytes"] = max_payload
        settings = load_settings(None, data_dir=data, mqtt=mqtt, influxdb={"url": influx.url})
        collector = build_collector(settings, StaticDirectory(devices))
        await collector.start()
        before = rss_mb()
        peak = before
        publisher = AckingPublisher(broker.port, client_id=f"m-junk-pub-{max_payload}", max_inflight=20)
        big = b"{" + b"x" * (1024 * 1024) + b"}"

        def publish_big() -> None:
            for i in range(2000):
                publisher.publish(f"city/{CITY}/air/{devices[i % 200].device_id}", big)
            if not publisher.wait_all_acked(300):
                raise RuntimeError("the broker did not acknowledge the 1 MB payloads")

        def publish_unknown() -> None:
            # paho keys unacknowledged messages by their 16-bit message id: more than 65,535 queued at once
            # overwrite each other (the first runs lost ~32,000 this way), so publish in acknowledged chunks.
            for i in range(100_000):
                publisher.publish(f"city/{CITY}/air/unknown-{i}", b'{"pm25_ugm3": "junk' + b"y" * 1000 + b'"}')
                if i % 10_000 == 9_999 and not publisher.wait_all_acked(600):
                    raise RuntimeError(f"the broker did not acknowledge messages up to unknown-{i}")

        async def sampled(job: asyncio.Future[None]) -> None:
            # The publisher blocks on its in-flight window, so it runs in a thread: the collector's loop stays free.
            nonlocal peak
            ticks = 0
            while not job.done():
                peak = max(peak, rss_mb())
                await asyncio.sleep(0.2)
                ticks += 1
                if "-v" in sys.argv and ticks % 25 == 0:
                    print(round(rss_mb()), collector.subscriber.health(), collector.subscriber.in_flight,
                          flush=True)
            await job

        await sampled(asyncio.ensure_future(asyncio.to_thread(publish_big)))
        await asyncio.sleep(2)
        peak = max(peak, rss_mb())
        after_big = rss_mb()
        await sampled(asyncio.ensure_future(asyncio.to_thread(publish_unknown)))
        handled_at = time.monotonic()
        # The broker acknowledged them all: wait until the collector handled them too. counts() is a GROUP BY
        # on the main thread, so it is asked rarely: polling it every 0.1 s starved the collector's loop.
        while time.monotonic() - handled_at < 900:
            for _ in range(25):
                await asyncio.sleep(0.2)
                peak = max(peak, rss_mb())
            if collector.subscriber.in_flight == 0 and sum(c for *_, c in collector.quarantine.counts()) >= (
                    100_000 + (2000 if max_payload else 0)):
                break
        handled_s = time.monotonic() - handled_at
        await collector.flush_diagnostics()
        peak = max(peak, rss_mb())
        publisher.close()
        quarantined = dict((r, c) for _, r, c in collector.quarantine.counts())
        await collector.close()
        print(orjson.dumps({
            "scenario": "junk", "limit": label, "rss_before_mb": round(before), "rss_after_1mb_payloads_mb":
            round(after_big), "rss_peak_mb": round(peak), "data_dir_mb": round(dir_mb(data), 1),
            "diagnostics_devices": collector.diagnostics.size, "handled_after_publisher_s": round(handled_s),
            "quarantined": quarantined,
        }).decode())


async def autosave(work: Path) -> None:
    """Publishing cost of Mosquitto's autosave settings, with the collectors' session offline (queue grows)."""
    import subprocess

    from collectors.transport.mqtt import MqttEndpoint, MqttSubscriber

    for label, conf in (("default (autosave_interval 1800)", ""), ("autosave_interval 1", "autosave_interval 1"),
                        ("autosave_on_changes, every 1000 changes",
                         "autosave_on_changes true\nautosave_interval 1000")):
        broker_dir = Path(tempfile.mkdtemp(prefix="nakhon-autosave-"))
        broker_dir.chmod(0o755)
        broker = MosquittoServer(broker_dir, extra_conf=conf)
        subprocess.run(["chown", "mosquitto:", str(broker.dir)], check=False)
        with broker:
            def done(*_: object) -> asyncio.Future[None]:
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                future.set_result(None)
                return future
            sub = MqttSubscriber(MqttEndpoint("127.0.0.1", broker.port), client_id="autosave-c", topics=["t/#"],
                                 handler=lambda *a: done())
            await sub.start()
            await sub.close()  # offline from now on: every message is queued in its session
            publisher = AckingPublisher(broker.port, client_id="autosave-pub", max_inflight=1000)
            n = 100_000
            started = time.monotonic()
            await asyncio.to_thread(publisher.publish_many, ((f"t/{i % 50}", b"x" * 100) for i in range(n)))
            await asyncio.to_thread(publisher.wait_all_acked, 600)
            elapsed = time.monotonic() - started
            publisher.close()
            cpu = psutil.Process(broker.proc.pid).cpu_times() if broker.proc else None
            db = broker.dir / "mosquitto.db"
            print(orjson.dumps({"scenario": "autosave", "config": label, "queued": n,
                                "publish_msg_per_s": round(n / elapsed), "broker_cpu_s":
                                round(cpu.user + cpu.system, 1) if cpu else None,
                                "db_mb": round(db.stat().st_size / 1e6, 1) if db.exists() else 0}).decode())


def main() -> None:
    scenario = sys.argv[1] if len(sys.argv) > 1 else "refusals"
    work = Path(tempfile.mkdtemp(prefix="nakhon-measure-"))
    asyncio.run({"refusals": refusals, "junk": junk, "autosave": autosave}[scenario](work))


if __name__ == "__main__":
    main()
