"""`nakhon bench`: the ingest benchmark (MQTT → collector → InfluxDB) against real Mosquitto and InfluxDB.

    nakhon bench --messages 200000 --publishers 2 --json-out bench/results/run.json

What one run does (method and definitions: `bench/README.md`):

1. starts Mosquitto and InfluxDB on free loopback ports in a temp dir (`bench.localservers`);
2. measures the broker's raw QoS 1 rate: the same publisher (`publish_city`, same devices, processes and QoS)
   publishes N messages to `bench/raw/...` while a C `mosquitto_sub -q 1` counts what it received;
3. registers the simulated devices (`nakhon devices import`) and starts `nakhon run collectors` as a process;
4. publishes N QoS 1 messages (unique `ts` per device) as fast as the broker acknowledges them, plus a small
   probe stream (`bench-probe`, `ts` = publish time) whose visibility in InfluxDB is polled every 50 ms;
5. waits until InfluxDB holds every acknowledged message, checks point by point, prints JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer

from nakhon.sim.city import SimDevice

if TYPE_CHECKING:
    import httpx
    import psutil

    from bench.localservers import InfluxServer, MosquittoServer

NAKHON = [sys.executable, "-m", "nakhon.cli"]
PROBE_DEVICE = "bench-probe"
SENTINEL = b"__bench_ready__"
# A field every message of the feed carries (the simulator always sends it): points are counted by it.
COUNT_FIELD = {"air": "pm25_ugm3", "flood": "level_m", "energy": "power_kw", "bus": "speed_kmh"}

REQUIRED_KEYS = (
    "published",
    "acknowledged_by_broker",
    "stored",
    "lost",
    "duplicates",
    "sustained_msgs_per_s",
    "publish_to_stored_latency_ms",
    "collector_peak_rss_mb",
    "broker_raw_qos1_msgs_per_s",
    "ratio_to_broker_raw",
    "machine",
)


def _servers() -> Any:
    import bench.localservers as servers

    return servers


# --------------------------------------------------------------------------------------------------- helpers


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _measurements() -> dict[str, str]:
    from collectors.feeds import measurement_for

    return {feed: measurement_for(feed) for feed in COUNT_FIELD}


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(servers: Any, load_before: tuple[float, ...], **extra: Any) -> dict[str, Any]:
    """The `machine` part of a result: cores, CPU, load average before, versions (plus `extra` keys)."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "load_average_before": [round(x, 2) for x in load_before],
        **extra,
        "python": platform.python_version(),
        "mosquitto": _version([servers.require_binary("mosquitto"), "-h"]),
        "influxd": _version([servers.require_binary("influxd"), "version"]),
    }


@dataclasses.dataclass(slots=True)
class RawDevice(SimDevice):
    """A simulated device publishing under `bench/raw/<feed>/<id>` (the collector does not subscribe there)."""

    @property
    def topic(self) -> str:
        return f"bench/raw/{self.feed}/{self.device_id}"


def _raw_devices(devices: list[SimDevice]) -> list[SimDevice]:
    """The same devices, same messages, on raw topics."""
    return [RawDevice(**{f.name: getattr(d, f.name) for f in dataclasses.fields(d)}) for d in devices]


# --------------------------------------------------------------------------------------------------- sampling


class ProcessSampler:
    """Every `interval_s`: RSS of the collector (with its children) and CPU time of every process involved.

    CPU seconds are accumulated per pid from `cpu_times()` (user + system), so processes that exit during
    the window (publishers) still count with their last sample."""

    def __init__(self, groups: dict[str, list[int]], collector_pid: int, interval_s: float = 0.1) -> None:
        import psutil

        self.psutil = psutil
        self.interval_s = interval_s
        self.collector = psutil.Process(collector_pid)
        self.groups: dict[str, list[psutil.Process]] = {
            name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()
        }
        self.me = psutil.Process()
        self.peak_rss = 0
        self.first: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self.started = 0.0
        self.stopped = 0.0

    def _cpu(self, proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    def _tree(self, proc: psutil.Process) -> list[psutil.Process]:
        try:
            return [proc, *proc.children(recursive=True)]
        except self.psutil.Error:
            return []

    def sample(self) -> None:
        rss = 0
        for proc in self._tree(self.collector):
            with contextlib.suppress(self.psutil.Error):
                rss += proc.memory_info().rss
                self._record("collector", proc)
        self.peak_rss = max(self.peak_rss, rss)
        for name, procs in self.groups.items():
            for proc in procs:
                with contextlib.suppress(self.psutil.Error):
                    self._record(name, proc)
        # publisher processes: children of this process that are not servers / collector / mosquitto_sub
        known = {p.pid for procs in self.groups.values() for p in procs} | {self.collector.pid}
        with contextlib.suppress(self.psutil.Error):
            for child in self.me.children(recursive=True):
                if child.pid not in known:
                    with contextlib.suppress(self.psutil.Error):
                        self._record("publishers", child)
        with contextlib.suppress(self.psutil.Error):
            self._record("bench (probe, polling)", self.me)

    def _record(self, name: str, proc: psutil.Process) -> None:
        key = (name, proc.pid)
        value = self._cpu(proc)
        # At the baseline a process counts from what it had used; one first seen later (a publisher) from 0.
        self.first.setdefault(key, 0.0 if self.started else value)
        self.last[key] = value

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self.sample()  # baseline
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()
        self.stopped = time.monotonic()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used over the window per group."""
        used: dict[str, float] = {}
        for (name, pid), last in self.last.items():
            used[name] = used.get(name, 0.0) + last - self.first.get((name, pid), 0.0)
        return used

    def cpu_percent(self) -> dict[str, float]:
        """Average CPU % over the window per group (100 % = one core fully busy)."""
        wall = max(1e-9, self.stopped - self.started)
        return {name: round(100 * seconds / wall, 1) for name, seconds in sorted(self.cpu_seconds().items())}


class HealthPoller:
    """Once a second: the collector's `/healthz` (messages in flight, points pending in the writer), for the
    timeline in the result (`details.timeline`). One request a second: negligible for the collector."""

    def __init__(self, metrics_port: int, interval_s: float = 1.0) -> None:
        self.url = f"http://127.0.0.1:{metrics_port}/healthz"
        self.interval_s = interval_s
        self.timeline: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-health", daemon=True)
        self._t0 = 0.0

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    checks = http.get(self.url).json()["checks"]
                    self.timeline.append({
                        "t_s": round(time.monotonic() - self._t0, 1),
                        "in_flight": checks["broker"]["in_flight"],
                        "pending_points": checks["sink"]["pending_points"],
                        "state": checks["sink"]["state"],
                    })
                self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def max(self, key: str) -> int:
        return max((int(row[key]) for row in self.timeline), default=0)


# --------------------------------------------------------------------------------------------------- probe


class Probe:
    """A paced QoS 1 stream from `bench-probe` (`ts` = publish time), and a poller recording when each probe
    point first becomes visible in InfluxDB (every `poll_s`; visibility time = when the answer arrived)."""

    def __init__(self, broker_port: int, influx_url: str, database: str, measurement: str, field: str,
                 payload_fields: dict[str, Any], rate: float, poll_s: float = 0.05) -> None:
        self.broker_port = broker_port
        self.influx_url = influx_url
        self.database = database
        self.measurement = measurement
        self.field = field
        self.payload_fields = payload_fields
        self.rate = rate
        self.poll_s = poll_s
        self.sent: list[int] = []
        self.acked: set[int] = set()
        self.seen: dict[int, float] = {}  # ts_ms -> wall time (s) it was first visible
        self._pending: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop_publishing = threading.Event()
        self._stop_polling = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._publish, name="bench-probe-pub", daemon=True),
            threading.Thread(target=self._poll, name="bench-probe-poll", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _publish(self) -> None:
        import orjson
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{uuid.uuid4().hex[:8]}",
                             protocol=MQTTProtocolVersion.MQTTv5)

        def on_publish(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            with self._lock:
                ts = self._pending.pop(mid, None)
                if ts is not None and not getattr(reason, "is_failure", False):
                    self.acked.add(ts)

        client.on_publish = on_publish
        client.connect("127.0.0.1", self.broker_port)
        client.loop_start()
        topic = f"city/laem-chabang/air/{PROBE_DEVICE}"
        period = 1.0 / self.rate
        next_at = time.monotonic()
        last_ts = 0
        try:
            while not self._stop_publishing.is_set():
                ts = max(int(time.time() * 1000), last_ts + 1)
                last_ts = ts
                with self._lock:
                    info = client.publish(topic, orjson.dumps({"ts": ts, **self.payload_fields}), qos=1)
                    self._pending[info.mid] = ts
                    self.sent.append(ts)
                next_at += period
                self._stop_publishing.wait(max(0.0, next_at - time.monotonic()))
            deadline = time.monotonic() + 10
            while self._pending and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            client.loop_stop()
            client.disconnect()

    def _poll(self) -> None:
        import httpx

        with httpx.Client(timeout=10) as http:
            while not self._stop_polling.is_set():
                # from the oldest probe not seen yet: batches may become visible out of order
                with self._lock:
                    unseen = [ts for ts in self.sent if ts not in self.seen]
                    since_ms = min(unseen) if unseen else (self.sent[-1] + 1 if self.sent else 0)
                q = (f'SELECT "{self.field}" FROM "{self.measurement}" '
                     f"WHERE \"device_id\" = '{PROBE_DEVICE}' AND time >= {since_ms * 1_000_000}")
                try:
                    response = http.post(f"{self.influx_url}/query",
                                         params={"q": q, "db": self.database, "epoch": "ms"})
                    arrived = time.time()
                    response.raise_for_status()
                    for result in response.json().get("results", []):
                        for series in result.get("series", []):
                            for row in series["values"]:
                                self.seen.setdefault(int(row[0]), arrived)
                except (httpx.HTTPError, ValueError):
                    pass
                self._stop_polling.wait(self.poll_s)

    def stop_publishing(self) -> None:
        self._stop_publishing.set()
        self._threads[0].join(15)

    def wait_visible(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.acked <= set(self.seen):
            time.sleep(0.05)
        self._stop_polling.set()
        self._threads[1].join(5)

    def latencies_ms(self) -> list[float]:
        return [(self.seen[ts] * 1000 - ts) for ts in sorted(self.acked) if ts in self.seen]


# --------------------------------------------------------------------------------------------------- phases


def _influx_counts(http: httpx.Client, influx_url: str, database: str) -> dict[str, int]:
    """Points per device over the four measurements (one request, `count(field) ... GROUP BY device_id`)."""
    measurements = _measurements()
    q = ";".join(
        f'SELECT count("{COUNT_FIELD[feed]}") FROM "{measurements[feed]}" GROUP BY "device_id"' for feed in COUNT_FIELD
    )
    response = http.post(f"{influx_url}/query", params={"q": q, "db": database})
    response.raise_for_status()
    counts: dict[str, int] = {}
    for result in response.json().get("results", []):
        if "error" in result:
            raise RuntimeError(f"InfluxQL error: {result['error']}")
        for series in result.get("series", []):
            device = series.get("tags", {}).get("device_id", "")
            counts[device] = counts.get(device, 0) + int(series["values"][0][1])
    return counts


def _stored_keys(http: httpx.Client, influx_url: str, database: str) -> list[tuple[str, int]]:
    """Every stored (device_id, ts_ms), one row per point, the probe excluded (after the timed part)."""
    keys: list[tuple[str, int]] = []
    measurements = _measurements()
    for feed, field in COUNT_FIELD.items():
        q = (f'SELECT "{field}", "device_id" FROM "{measurements[feed]}" '
             f"WHERE \"device_id\" != '{PROBE_DEVICE}'")
        response = http.post(f"{influx_url}/query",
                             params={"q": q, "db": database, "epoch": "ms", "chunked": "true", "chunk_size": "20000"},
                             timeout=120)
        response.raise_for_status()
        for line in response.text.splitlines():  # chunked: one JSON document per line
            if not line.strip():
                continue
            for result in json.loads(line).get("results", []):
                if "error" in result:
                    raise RuntimeError(f"InfluxQL error: {result['error']}")
                for series in result.get("series", []):
                    cols = series["columns"]
                    t_i, d_i = cols.index("time"), cols.index("device_id")
                    keys.extend((row[d_i], int(row[t_i])) for row in series["values"])
    return keys


def _broker_raw(broker: MosquittoServer, devices: list[SimDevice], n: int, publishers: int, qos: int,
                timeout_s: float) -> dict[str, Any]:
    """The same publisher → Mosquitto → C `mosquitto_sub` (QoS `qos`): the path's ceiling on this machine."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from nakhon.sim.publisher import publish_city

    sub = subprocess.Popen(
        [shutil.which("mosquitto_sub") or "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
         "-q", str(qos), "-i", f"bench-raw-sub-{uuid.uuid4().hex[:8]}", "-t", "bench/raw/#", "-t", "bench/ready"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    state = {"lines": 0, "last": 0.0, "ready": False}

    def reader() -> None:
        assert sub.stdout is not None
        fd = sub.stdout.fileno()
        tail = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            whole, tail = data[:cut], data[cut:]
            ready = whole.count(SENTINEL + b"\n")
            if ready:
                state["ready"] = True
            lines = whole.count(b"\n") - ready
            if lines:
                state["lines"] += lines
                state["last"] = time.time()

    thread = threading.Thread(target=reader, name="bench-raw-reader", daemon=True)
    thread.start()
    # Wait until mosquitto_sub is subscribed: publish a sentinel until it prints one.
    pinger = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-ready-{uuid.uuid4().hex[:8]}")
    pinger.connect("127.0.0.1", broker.port)
    pinger.loop_start()
    deadline = time.monotonic() + 20
    while not state["ready"] and time.monotonic() < deadline:
        pinger.publish("bench/ready", SENTINEL, qos=1)
        time.sleep(0.1)
    pinger.loop_stop()
    pinger.disconnect()
    if not state["ready"]:
        sub.kill()
        raise RuntimeError("mosquitto_sub did not receive the readiness sentinel")
    time.sleep(0.3)  # late sentinels arrive before the measured run
    state["lines"] = 0
    stats = asyncio.run(publish_city(broker.url, devices=_raw_devices(devices), rate=0, count=n, qos=qos,
                                     processes=publishers, client_id=f"bench-raw-pub-{uuid.uuid4().hex[:8]}",
                                     incidents=False, malformed_rate=0.0))
    deadline = time.monotonic() + timeout_s
    last_seen, last_count = time.monotonic(), -1
    while state["lines"] < stats.acknowledged and time.monotonic() < deadline:
        if state["lines"] != last_count:
            last_count, last_seen = int(state["lines"]), time.monotonic()
        elif time.monotonic() - last_seen > 5:  # nothing new for 5 s: it will not come
            break
        time.sleep(0.05)
    sub.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        sub.wait(5)
    if sub.poll() is None:
        sub.kill()
    thread.join(5)
    received = int(state["lines"])
    seconds = float(state["last"]) - stats.started_at if received else 0.0
    return {
        "published": stats.published,
        "acknowledged_by_broker": stats.acknowledged,
        "received_by_mosquitto_sub": received,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(received / seconds, 1) if seconds > 0 else 0.0,
        "publisher_acked_msgs_per_s": round(stats.rate, 1),
    }


def _write_config(directory: Path, broker_url: str, influx_url: str, metrics_port: int, gateway_port: int) -> Path:
    config = directory / "nakhon.toml"
    config.write_text(
        f'data_dir = "{directory / "data"}"\n'
        f'[mqtt]\nurl = "{broker_url}"\nclient_id = "bench-collector"\n'
        f'[influxdb]\nurl = "{influx_url}"\ndatabase = "nakhon"\ngzip = false\n'
        f"[metrics]\nport = {metrics_port}\n"
        f"[gateway]\nport = {gateway_port}\n"
    )
    return config


def _wait_healthy(http: httpx.Client, proc: subprocess.Popen[bytes], port: int, log_path: Path,
                  timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited {proc.returncode}:\n{log_path.read_text(errors='replace')[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if http.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-4000:]
    raise RuntimeError(f"collector not healthy within {timeout_s:.0f} s:\n{tail}")


def _import_devices(config: Path, devices: list[SimDevice]) -> None:
    """Register `devices` with `nakhon devices import` (through a CSV next to the config)."""
    from nakhon.sim.city import registry_csv

    csv_path = config.parent / "devices.csv"
    csv_path.write_text(registry_csv(devices))
    imported = subprocess.run([*NAKHON, "--config", str(config), "devices", "import", str(csv_path)],
                              capture_output=True, text=True, timeout=120)
    if imported.returncode != 0:
        raise RuntimeError(f"nakhon devices import failed:\n{imported.stdout}\n{imported.stderr}")


def _start_collector(config: Path, log_path: Path, profile_out: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `nakhon run collectors` (under cProfile when `profile_out` is set), output appended to `log_path`.

    Returns at once: the caller keeps the process for its teardown, then waits with `_wait_healthy`."""
    cmd = [*NAKHON, "--config", str(config), "run", "collectors"]
    if profile_out is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile_out), "-m", "nakhon.cli", *cmd[3:]]
    with open(log_path, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def _stop_collector(collector: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """SIGTERM and wait up to `timeout_s` for the graceful exit (the collector flushes on the way out)."""
    if collector.poll() is None:
        collector.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            collector.wait(timeout_s)


class _Service(Protocol):
    def stop(self) -> None: ...


def _teardown(http: httpx.Client, collector: subprocess.Popen[bytes] | None, services: Iterable[_Service],
              root: Path, keep: bool) -> None:
    """The end of every run: close the HTTP client, kill a collector still running, stop `services` in order,
    remove the work dir unless `keep`."""
    http.close()
    if collector is not None and collector.poll() is None:
        collector.kill()
        collector.wait(10)
    for service in services:
        service.stop()
    if not keep:
        shutil.rmtree(root, ignore_errors=True)


def _emit(result: dict[str, Any], json_out: Path | None) -> None:
    """Print the result as JSON and, with `json_out`, write it there too."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    typer.echo(text)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")


def _metric_sum(text: str, name: str) -> float:
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(m.group(1)) for m in pattern.finditer(text))


# --------------------------------------------------------------------------------------------------- the run


def run_bench(
    *,
    messages: int = 200_000,
    devices: int = 200,
    publishers: int = 2,
    qos: int = 1,
    probe_rate: float = 20.0,
    timeout_s: float = 600.0,
    workdir: Path | None = None,
    keep: bool = False,
    profile_out: Path | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Run the benchmark once; returns the result (see `REQUIRED_KEYS`)."""
    import httpx

    from nakhon.sim.city import City
    from nakhon.sim.publisher import publish_city
    from nakhon.sim.signals import Simulation

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    servers = _servers()
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="nakhon-bench-", dir=workdir))
    say(f"bench: workdir {root}")
    city = City()
    sim_devices = city.devices(devices)
    air = next(d for d in sim_devices if d.feed == "air")
    probe_device = dataclasses.replace(air, device_id=PROBE_DEVICE, name="bench probe")
    probe_fields = Simulation([probe_device], seed=1, malformed_rate=0.0, incidents=[]).reading(
        probe_device, int(time.time() * 1000)
    )
    collector: subprocess.Popen[bytes] | None = None
    broker: MosquittoServer = servers.MosquittoServer(root)
    influx: InfluxServer = servers.InfluxServer(root)
    http = httpx.Client(timeout=30)
    try:
        broker.start()
        influx.start()

        # 1. the broker's raw rate, same publisher, C subscriber
        say(f"bench: broker raw rate, {messages} messages at QoS {qos} to mosquitto_sub ...")
        raw = _broker_raw(broker, sim_devices, messages, publishers, qos, timeout_s)
        say(f"bench: broker raw {raw['msgs_per_s']:,.0f} msg/s ({raw['received_by_mosquitto_sub']} received)")

        # 2. registry + collector
        metrics_port, gateway_port = servers.free_port(), servers.free_port()
        config = _write_config(root, broker.url, influx.url, metrics_port, gateway_port)
        _import_devices(config, [*sim_devices, probe_device])
        collector_log = root / "collector.log"
        collector = _start_collector(config, collector_log, profile_out)
        _wait_healthy(http, collector, metrics_port, collector_log)

        # 3. the load, with the probe stream and the samplers
        assert broker.proc is not None and influx.proc is not None
        sampler = ProcessSampler({"mosquitto": [broker.proc.pid], "influxd": [influx.proc.pid]}, collector.pid)
        probe = Probe(broker.port, influx.url, influx.database, _measurements()["air"], COUNT_FIELD["air"],
                      probe_fields, probe_rate)
        health = HealthPoller(metrics_port)
        sampler.start()
        health.start()
        probe.start()
        say(f"bench: publishing {messages} QoS {qos} messages from {devices} devices, {publishers} publishers ...")
        stats = asyncio.run(publish_city(broker.url, devices=sim_devices, rate=0, count=messages, qos=qos,
                                         processes=publishers, record_acked=True, incidents=False,
                                         malformed_rate=0.0, client_id=f"bench-load-{uuid.uuid4().hex[:8]}"))
        probe.stop_publishing()
        say(f"bench: {stats.summary()}; waiting for InfluxDB ...")

        # 4. until InfluxDB holds what was acknowledged (polled; the time of the poll that first saw it all)
        acked = stats.acknowledged
        stored = 0
        last_stored_at = time.time()
        last_progress = time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = _influx_counts(http, influx.url, influx.database)
            now = time.time()
            current = sum(v for k, v in counts.items() if k != PROBE_DEVICE)
            if current != stored:
                stored, last_stored_at, last_progress = current, now, time.monotonic()
            if stored >= acked or time.monotonic() - last_progress > 30:
                break
            time.sleep(0.1)
        probe.wait_visible(10)
        sampler.stop()
        health.stop()
        load_during = os.getloadavg()
        say(f"bench: stored {stored} of {acked}")

        # 5. point-by-point check (untimed)
        metrics_text = http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        keys = _stored_keys(http, influx.url, influx.database)
        acked_keys = stats.acked or []
        stored_set = set(keys)
        acked_set = set(acked_keys)
        lost = len(acked_set - stored_set)
        received = _metric_sum(metrics_text, "nakhon_messages_received_total")
        sent_total = stats.published + len(probe.sent)
        seconds = last_stored_at - stats.started_at
        sustained = stored / seconds if seconds > 0 else 0.0
        latencies = probe.latencies_ms()
        result: dict[str, Any] = {
            "published": stats.published,
            "acknowledged_by_broker": acked,
            "stored": stored,
            "lost": lost,
            "duplicates": len(keys) - len(stored_set),
            "sustained_msgs_per_s": round(sustained, 1),
            "publish_to_stored_latency_ms": {
                "p50": _round(_percentile(latencies, 50)),
                "p90": _round(_percentile(latencies, 90)),
                "p99": _round(_percentile(latencies, 99)),
                "max": _round(max(latencies) if latencies else None),
                "probes": len(probe.sent),
                "probes_acknowledged": len(probe.acked),
                "probes_seen": len(latencies),
                "method": f"probe stream {probe_rate:g} msg/s, ts = publish time, InfluxDB polled every 50 ms",
            },
            "collector_peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
            "broker_raw_qos1_msgs_per_s": raw["msgs_per_s"],
            "ratio_to_broker_raw": round(sustained / raw["msgs_per_s"], 3) if raw["msgs_per_s"] else None,
            "machine": machine_info(servers, load_before, load_average_after_load=[round(x, 2) for x in load_during]),
            "details": {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "messages": messages,
                "devices": devices,
                "publishers": publishers,
                "qos": qos,
                "seconds_first_publish_to_last_stored": round(seconds, 3),
                "publish_seconds": round(stats.seconds, 3),
                "publisher_acked_msgs_per_s": round(stats.rate, 1),
                "publish_failed": stats.failed,
                "stored_not_acknowledged": len(stored_set - acked_set),
                "acknowledged_keys_unique": len(acked_set),
                "collector_messages_received": int(received),
                "redelivered_to_collector": max(0, int(received) - sent_total),
                "cpu_percent_during_load": sampler.cpu_percent(),
                "cpu_window_s": round(sampler.stopped - sampler.started, 2),
                "collector_cpu_us_per_message": round(
                    1e6 * sampler.cpu_seconds().get("collector", 0.0) / max(1, int(received)), 1
                ),
                "collector_max_in_flight": health.max("in_flight"),
                "collector_max_pending_points": health.max("pending_points"),
                "timeline": health.timeline,
                "broker_raw": raw,
                "collector_config": {"gzip": False, "batch_points": 5000, "flush_interval_s": 0.25,
                                     "receive_maximum": 20000},
            },
        }
        # stop the collector gracefully before reading the load average after
        _stop_collector(collector)
        result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        if keep:
            result["details"]["workdir"] = str(root)
        return result
    finally:
        _teardown(http, collector, [influx, broker], root, keep)


__all__ = ["REQUIRED_KEYS", "run_bench"]
