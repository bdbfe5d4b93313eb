"""`nakhon bench-notify`: publish → notification latency of an immediate rule under background MQTT load.

    nakhon bench-notify --probes 100 --background-rate 1000 --json-out bench/results/run-notify.json

What one run does (method and definitions: `bench/README.md`, section "`nakhon bench-notify`"):

1. starts Mosquitto and InfluxDB on free loopback ports (`bench.localservers`) and, in this process, an HTTP
   webhook receiver on a free port (`http.server` in a thread) that records the receipt time (`time.time_ns()`)
   and the JSON body of every POST;
2. writes a rules directory (the shipped `rules/defaults/*.yaml` plus `bench_probe.yaml`: an immediate
   critical rule `bench_probe` on the probe device, `level_m > 100`, cleared by `level_m < 50`) and a routing
   file (the probe rule → an apprise `json://` webhook receiver, `group_wait: 0s`, `group_interval: 100ms`, no
   quiet hours; everything else → a log-only receiver), a TOML config pointing at both, registers the simulated
   city plus the probe device (`nakhon devices import`) and starts `nakhon run collectors` (rules engine inside);
3. starts the background load (`publish_city(rate=background_rate, qos=1)`), waits until the collector receives
   it at a steady rate, then publishes `probes` trigger messages from the probe device (paho, MQTT 5, QoS 1),
   each followed 0.25 s later by a clearing one (one pair per 0.5 s). Trigger `n` carries
   `level_m = 200 + n / 1000`, which the rule's summary puts into the webhook body: that is how a notification
   is matched to its probe. Latency = webhook receipt time − publish time (`time.time_ns()` just before
   `publish()`, same clock, same process);
4. after the run, reads the notification log and the collector's diagnostics (recent raw messages) from the
   registry database to split the latency into stages (see `stages_ms` in the JSON).
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
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.ingest import (
    NAKHON,
    ProcessSampler,
    _cpu_model,
    _import_devices,
    _metric_sum,
    _percentile,
    _round,
    _start_collector,
    _stop_collector,
    _teardown,
    _version,
    _wait_healthy,
)
from bench.load import ThreadedLoad
from bench.storm import StormBackground

if TYPE_CHECKING:
    import httpx

    from bench.localservers import InfluxServer, MosquittoServer
    from nakhon.sim.city import SimDevice
    from nakhon.sim.publisher import PublishStats

PROBE_DEVICE = "bench-probe"
PROBE_RULE = "bench_probe"
PROBE_BASE = 200.0  # trigger n carries level_m = PROBE_BASE + n / 1000 (the schema allows level_m ≤ 500)
PROBE_CLEAR = 1.0
PAIR_PERIOD_S = 0.5  # one trigger + one clear per 0.5 s
TARGET_P99_MS = 250.0
WEBHOOK_RECEIVER = "bench-webhook"
NULL_RECEIVER = "bench-log-only"
GROUP_INTERVAL = "100ms"
_PROBE_IN_BODY = re.compile(r"BENCH-PROBE level_m=([0-9.]+)")
_STATE_IN_BLOCK = re.compile(r"State: (\w+)")

REQUIRED_KEYS = (
    "probes_sent",
    "probes_acknowledged",
    "notifications_received",
    "missing",
    "duplicates",
    "resolved_received",
    "latency_ms",
    "target_p99_ms",
    "target_met",
    "stages_ms",
    "background",
    "collector_cpu_percent",
    "cpu_percent",
    "load_average_before",
    "load_average_after",
    "method",
    "machine",
    "details",
)


# --------------------------------------------------------------------------------------------------- webhook


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookHit:
    received_ns: int
    path: str
    body: dict[str, Any]


class WebhookReceiver:
    """A local HTTP server (thread per request) recording every POST it accepts. Created `down` (the receiver-outage
    scenario) it answers 500 and records nothing, counting the refusals, until `recover()`; then 200."""

    def __init__(self, *, down: bool = False) -> None:
        self.hits: list[WebhookHit] = []
        self.refused = 0
        self.down = down
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received_ns = time.time_ns()  # request line and headers are in: the notification has arrived
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with outer._lock:
                    down = outer.down
                    if down:
                        outer.refused += 1
                    else:
                        outer.hits.append(WebhookHit(received_ns, self.path, _json_object(raw)))
                self.send_response(500 if down else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="bench-webhook", daemon=True)

    @property
    def apprise_url(self) -> str:
        return f"json://127.0.0.1:{self.port}/notify"

    def start(self) -> None:
        self._thread.start()

    def recover(self) -> None:
        with self._lock:
            self.down = False

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def snapshot(self) -> list[WebhookHit]:
        with self._lock:
            return list(self.hits)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {"_raw": raw.decode("utf-8", errors="replace")}
    return body if isinstance(body, dict) else {"_": body}


def parse_hit(hit: WebhookHit) -> list[tuple[str, int]]:
    """(state, probe sequence number) of each probe alert in one apprise `json://` POST ({version, title, message,
    attachments, type}). One message may carry several alerts of its group (e.g. a firing one and the previous
    probe's resolution, flushed together): each alert's block in the body has its own `State:` line."""
    message = str(hit.body.get("message", ""))
    out: list[tuple[str, int]] = []
    for block in message.split("• ")[1:]:
        found = _PROBE_IN_BODY.search(block)
        state = _STATE_IN_BLOCK.search(block)
        if found:
            out.append((state.group(1) if state else "unknown", probe_seq(float(found.group(1)))))
    return out


def probe_value(seq: int) -> float:
    return round(PROBE_BASE + seq / 1000, 3)


def probe_seq(value: float) -> int:
    return round((value - PROBE_BASE) * 1000)


# --------------------------------------------------------------------------------------------------- files


PROBE_RULE_YAML = f"""# nakhon bench-notify: an immediate rule (no `for`) on the probe device only.
rules:
  - name: {PROBE_RULE}
    feed: flood
    severity: critical
    labels: {{rule_group: bench_probe}}
    match: {{devices: [{PROBE_DEVICE}]}}
    when: {{compare: {{field: level_m, op: ">", value: 100}}}}
    clear: {{compare: {{field: level_m, op: "<", value: 50}}}}
    summary_th: "BENCH-PROBE level_m={{{{ value }}}}"
    summary_en: "BENCH-PROBE level_m={{{{ value }}}}"
"""


def routing_yaml(webhook_url: str, retry: str | None = None) -> str:
    retry_line = f"    retry: {retry}\n" if retry else ""
    return f"""# nakhon bench-notify: the probe rule to the webhook at once; everything else to a log-only receiver.
receivers:
  - name: {NULL_RECEIVER}
    urls: []
  - name: {WEBHOOK_RECEIVER}
    urls: ["{webhook_url}"]
    language: en
{retry_line}route:
  receiver: {NULL_RECEIVER}
  group_by: [rule, city]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - match: {{rule: {PROBE_RULE}}}
      receiver: {WEBHOOK_RECEIVER}
      group_by: [rule, device_id]
      group_wait: 0s
      group_interval: {GROUP_INTERVAL}
      repeat_interval: 1h
"""


def write_rules(root: Path, webhook_url: str, retry: str | None = None) -> tuple[Path, Path]:
    import rules as rules_pkg

    rules_dir = root / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    defaults = Path(rules_pkg.__file__).resolve().parent / "defaults"
    for path in sorted(defaults.glob("*.yaml")):
        shutil.copy(path, rules_dir / path.name)
    (rules_dir / "bench_probe.yaml").write_text(PROBE_RULE_YAML, encoding="utf-8")
    routes = root / "routing.yaml"
    routes.write_text(routing_yaml(webhook_url, retry), encoding="utf-8")
    return rules_dir, routes


def write_config(root: Path, broker_url: str, influx_url: str, metrics_port: int, gateway_port: int,
                 rules_dir: Path, routes_file: Path) -> Path:
    config = root / "nakhon.toml"
    config.write_text(
        f'data_dir = "{root / "data"}"\n'
        f'[mqtt]\nurl = "{broker_url}"\nclient_id = "bench-notify-collector"\n'
        f'[influxdb]\nurl = "{influx_url}"\ndatabase = "nakhon"\ngzip = false\n'
        f"[metrics]\nport = {metrics_port}\n"
        f"[gateway]\nport = {gateway_port}\n"
        f'[rules]\ndir = "{rules_dir}"\nroutes_file = "{routes_file}"\n'
    )
    return config


# --------------------------------------------------------------------------------------------------- load


class Background(ThreadedLoad["PublishStats"]):
    """`publish_city(rate=...)` at QoS 1 in a thread until `stop()`."""

    def __init__(self, broker_url: str, devices: list[Any], rate: float) -> None:
        self.broker_url = broker_url
        self.devices = devices
        self.rate = rate
        super().__init__("bench-background", "background publisher")

    def publish(self, stop: threading.Event) -> PublishStats:
        from nakhon.sim.publisher import publish_city

        return asyncio.run(publish_city(
            self.broker_url, devices=self.devices, rate=self.rate, qos=1, stop_event=stop,
            client_id=f"bench-notify-load-{uuid.uuid4().hex[:8]}", incidents=True, malformed_rate=0.0,
        ))


@dataclasses.dataclass(slots=True)
class ProbeSent:
    seq: int
    kind: str  # trigger | clear
    published_ns: int
    mid: int
    acked: bool = False


class ProbePublisher:
    """The probe device's messages on their own MQTT 5 connection, QoS 1, `ts` = publish time (ms)."""

    def __init__(self, broker_port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.topic = topic
        self.sent: list[ProbeSent] = []
        self._by_mid: dict[int, ProbeSent] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-notify-probe-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", broker_port)
        self.client.loop_start()
        self._last_ts = 0

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            sent = self._by_mid.pop(mid, None)
            if sent is not None and not getattr(reason, "is_failure", False):
                sent.acked = True

    def publish(self, seq: int, kind: str) -> ProbeSent:
        import orjson

        level = probe_value(seq) if kind == "trigger" else PROBE_CLEAR
        with self._lock:
            now_ns = time.time_ns()
            ts = max(now_ns // 1_000_000, self._last_ts + 1)
            self._last_ts = ts
            payload = orjson.dumps({"ts": ts, "level_m": level, "rain_mm": 0.0, "battery_pct": 90.0})
            info = self.client.publish(self.topic, payload, qos=1)
            sent = ProbeSent(seq, kind, now_ns, info.mid)
            self._by_mid[info.mid] = sent
            self.sent.append(sent)
        return sent

    def close(self, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while self._by_mid and time.monotonic() < deadline:
            time.sleep(0.02)
        self.client.loop_stop()
        self.client.disconnect()


# --------------------------------------------------------------------------------------------------- helpers


def _received_total(http: httpx.Client, metrics_port: int) -> float:
    text = http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return _metric_sum(text, "nakhon_messages_received_total")


def _notifications_total(metrics_text: str, receiver: str) -> dict[str, float]:
    """`nakhon_notifications_total{receiver, outcome}` of one receiver, by outcome."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("nakhon_notifications_total{") and f'receiver="{receiver}"' in line:
            outcome = re.search(r'outcome="([^"]*)"', line)
            if outcome:
                out[outcome.group(1)] = out.get(outcome.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _wait_steady(http: httpx.Client, metrics_port: int, rate: float, background: ThreadedLoad[Any],
                 say: Callable[[str], None], min_s: float = 3.0, max_s: float = 60.0) -> dict[str, Any]:
    """Until the collector has received the background at ≥ 90 % of its rate over two consecutive seconds."""
    started = time.monotonic()
    last = _received_total(http, metrics_port)
    good = 0
    per_s = 0.0
    while time.monotonic() - started < max_s:
        time.sleep(1.0)
        if not background.alive():
            raise RuntimeError("the background publisher stopped during warm-up")
        now = _received_total(http, metrics_port)
        per_s, last = now - last, now
        good = good + 1 if per_s >= 0.9 * rate else 0
        if good >= 2 and time.monotonic() - started >= min_s:
            break
    say(f"bench-notify: background steady at {per_s:,.0f} msg/s after {time.monotonic() - started:.1f} s")
    return {"warmup_s": round(time.monotonic() - started, 1), "received_msgs_per_s_at_start": round(per_s, 1)}


def _stats(values: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": _round(_percentile(values, 50)),
        "p90": _round(_percentile(values, 90)),
        "p99": _round(_percentile(values, 99)),
        "max": _round(max(values) if values else None),
        "min": _round(min(values) if values else None),
    }


def _db_rows(db_path: Path, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not db_path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)) as conn:
        return list(conn.execute(query, args).fetchall())


def _parse_db_time(value: Any) -> int | None:
    """A SQLAlchemy DateTime column from SQLite ('YYYY-MM-DD HH:MM:SS.ffffff', UTC) → epoch ns."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000) * 1000


def stage_breakdown(db_path: Path, published: dict[int, int], received: dict[int, int]) -> dict[str, Any]:
    """Where the time goes, per trigger, from the registry database after the run:

    - `rules_notifications.created_ns` = the pipeline's clock when it took the firing alert (`submit`, after the
      engine evaluated the reading and wrote the alert) — the flush decision;
    - `rules_notifications.updated_ns` = when the delivery was recorded (after apprise returned);
    - `device_recent_messages.received_at` = when the collector received the MQTT message (diagnostics keep
      the probe device's newest 20 messages, so only the last ~10 triggers have it).
    """
    notes = _db_rows(
        db_path,
        "SELECT a.message_en, n.created_ns, n.updated_ns, n.outcome, n.attempts FROM rules_notifications n "
        "JOIN rules_alerts a ON a.id = n.alert_id WHERE a.rule = ? AND n.kind = 'firing' AND n.receiver = ?",
        (PROBE_RULE, WEBHOOK_RECEIVER),
    )
    collector_rx: dict[int, int] = {}
    for received_at, payload in _db_rows(
        db_path, "SELECT received_at, payload FROM device_recent_messages WHERE device_id = ?", (PROBE_DEVICE,)
    ):
        with contextlib.suppress(ValueError, TypeError, KeyError):
            level = float(json.loads(payload)["level_m"])
            t = _parse_db_time(received_at)
            if level > 100 and t is not None:
                collector_rx[probe_seq(level)] = t
    to_flush, flush_to_hook, hook_to_recorded, to_collector, collector_to_flush = [], [], [], [], []
    attempts: list[int] = []
    t0 = min(published.values(), default=0)
    per_probe: dict[int, list[float | None]] = {
        seq: [seq, round((t - t0) / 1e9, 3), _round((received[seq] - t) / 1e6) if seq in received else None,
              None, None]
        for seq, t in sorted(published.items())
    }
    for message_en, created_ns, updated_ns, _outcome, n_attempts in notes:
        # the alert's value is the clearing reading's once resolved; its summary keeps the trigger's value
        found = _PROBE_IN_BODY.search(str(message_en or ""))
        seq = probe_seq(float(found.group(1))) if found else -1
        if seq not in published:
            continue
        attempts.append(int(n_attempts or 0))
        to_flush.append((int(created_ns) - published[seq]) / 1e6)
        per_probe[seq][3] = _round(to_flush[-1])
        if seq in received:
            flush_to_hook.append((received[seq] - int(created_ns)) / 1e6)
            per_probe[seq][4] = _round(flush_to_hook[-1])
            hook_to_recorded.append((int(updated_ns) - received[seq]) / 1e6)
        if seq in collector_rx:
            to_collector.append((collector_rx[seq] - published[seq]) / 1e6)
            collector_to_flush.append((int(created_ns) - collector_rx[seq]) / 1e6)
    return {
        "publish_to_collector_received": _stats(to_collector),
        "collector_received_to_pipeline_submit": _stats(collector_to_flush),
        "publish_to_pipeline_submit": _stats(to_flush),
        "pipeline_submit_to_webhook": _stats(flush_to_hook),
        "webhook_to_delivery_recorded": _stats(hook_to_recorded),
        "delivery_attempts_max": max(attempts, default=0),
        "per_probe_columns": ["seq", "published_at_s", "total_ms", "publish_to_submit_ms", "submit_to_webhook_ms"],
        "per_probe": list(per_probe.values()),
        "note": "collector receipt: diagnostics keep the newest 20 messages per device, so only the last ~10 "
                "triggers; pipeline submit = rules_notifications.created_ns (after rules evaluation and the "
                "alert's INSERT); delivery recorded = rules_notifications.updated_ns (after apprise returned)",
    }


# --------------------------------------------------------------------------------------------------- the stack


@dataclasses.dataclass(slots=True)
class NotifyStack:
    """What a bench-notify run starts: Mosquitto, InfluxDB, the webhook, `nakhon run collectors` with the shipped
    rules plus the probe rule, and the devices registered (the city's and the probe). The run adds its load."""

    root: Path
    servers: Any
    broker: MosquittoServer
    influx: InfluxServer
    webhook: WebhookReceiver
    http: httpx.Client
    sim_devices: list[SimDevice]
    probe_device: SimDevice
    metrics_port: int = 0
    collector: subprocess.Popen[bytes] | None = None
    background: ThreadedLoad[Any] | None = None
    probe: ProbePublisher | None = None


@contextlib.contextmanager
def notify_stack(*, prefix: str, devices: int, webhook: WebhookReceiver, workdir: Path | None, keep: bool,
                 say: Callable[[str], None], retry: str | None = None,
                 check_rules: bool = False) -> Iterator[NotifyStack]:
    """Start the stack (collector healthy) for the run in the `with` body; stop everything after it, whatever
    happened (the load and the probe first, then the collector, the webhook and the servers)."""
    import httpx

    import bench.localservers as servers
    from nakhon.sim.city import City

    root = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    say(f"bench-notify: workdir {root}")
    sim_devices = City().devices(devices) if devices > 0 else []
    flood = next((d for d in (sim_devices or City().devices(10)) if d.feed == "flood"), None)
    if flood is None:
        raise RuntimeError("the simulated city has no flood device to copy for the probe")
    stack = NotifyStack(
        root=root, servers=servers, broker=servers.MosquittoServer(root), influx=servers.InfluxServer(root),
        webhook=webhook, http=httpx.Client(timeout=30), sim_devices=sim_devices,
        probe_device=dataclasses.replace(flood, device_id=PROBE_DEVICE, name="bench-notify probe"),
    )
    try:
        stack.broker.start()
        stack.influx.start()
        webhook.start()
        rules_dir, routes_file = write_rules(root, webhook.apprise_url, retry)
        stack.metrics_port, gateway_port = servers.free_port(), servers.free_port()
        config = write_config(root, stack.broker.url, stack.influx.url, stack.metrics_port, gateway_port, rules_dir,
                              routes_file)
        if check_rules:
            checked = subprocess.run([*NAKHON, "rules", "check", str(rules_dir)], capture_output=True, text=True,
                                     timeout=120)
            if checked.returncode != 0:
                raise RuntimeError(f"nakhon rules check failed:\n{checked.stdout}\n{checked.stderr}")
        _import_devices(config, [*sim_devices, stack.probe_device])
        collector_log = root / "collector.log"
        stack.collector = _start_collector(config, collector_log)
        _wait_healthy(stack.http, stack.collector, stack.metrics_port, collector_log)
        yield stack
    finally:
        if stack.background is not None and stack.background.alive():
            with contextlib.suppress(Exception):
                stack.background.stop()
        if stack.probe is not None:
            with contextlib.suppress(Exception):
                stack.probe.client.loop_stop()
        _teardown(stack.http, stack.collector, [webhook, stack.influx, stack.broker], root, keep)


# --------------------------------------------------------------------------------------------------- the run


def run_bench_notify(
    *,
    probes: int = 100,
    background_rate: float = 1000.0,
    devices: int = 200,
    workdir: Path | None = None,
    keep: bool = False,
    wait_s: float = 15.0,
    log: Callable[[str], None] | None = None,
    storm_background: str = "",
) -> dict[str, Any]:
    """Run the benchmark once; returns the result (see `REQUIRED_KEYS`). Raises on a harness failure."""
    if probes < 1:
        raise ValueError("probes must be ≥ 1")
    if background_rate < 0:
        raise ValueError("background_rate must be ≥ 0")
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    load_before = os.getloadavg()
    with notify_stack(prefix="nakhon-bench-notify-", devices=devices, webhook=WebhookReceiver(), workdir=workdir,
                      keep=keep, say=say, check_rules=True) as stack:
        say("bench-notify: collector healthy")
        broker, influx, webhook, http, servers = stack.broker, stack.influx, stack.webhook, stack.http, stack.servers
        collector, metrics_port, sim_devices, root = stack.collector, stack.metrics_port, stack.sim_devices, stack.root
        assert collector is not None
        assert broker.proc is not None and influx.proc is not None
        sampler = ProcessSampler({"mosquitto": [broker.proc.pid], "influxd": [influx.proc.pid]}, collector.pid)
        warmup: dict[str, Any] = {"warmup_s": 0.0, "received_msgs_per_s_at_start": 0.0}
        background: ThreadedLoad[Any] | None = None
        if sim_devices and background_rate > 0:
            # storm_background: an alert storm (bench.storm scenario) as the load instead of the city
            background = stack.background = (
                StormBackground(broker.port, sim_devices, background_rate, storm_background)
                if storm_background else Background(broker.url, sim_devices, background_rate)
            )
            background.start()
            warmup = _wait_steady(http, metrics_port, background_rate, background, say)

        # the probes: trigger n, 0.25 s later its clear, next trigger 0.5 s after the previous one
        probe = stack.probe = ProbePublisher(broker.port, stack.probe_device.topic)
        say(f"bench-notify: {probes} probes, one trigger + clear per {PAIR_PERIOD_S} s ...")
        sampler.start()
        received_before = _received_total(http, metrics_port)
        probe_started = time.monotonic()
        next_at = time.monotonic()
        for seq in range(1, probes + 1):
            probe.publish(seq, "trigger")
            time.sleep(max(0.0, next_at + PAIR_PERIOD_S / 2 - time.monotonic()))
            probe.publish(seq, "clear")
            next_at += PAIR_PERIOD_S
            time.sleep(max(0.0, next_at - time.monotonic()))
            if collector.poll() is not None:
                raise RuntimeError(f"collector exited {collector.returncode} during the probes")
        probe_seconds = time.monotonic() - probe_started
        received_after = _received_total(http, metrics_port)
        triggers = {s.seq: s.published_ns for s in probe.sent if s.kind == "trigger"}

        # wait for the last notifications (firing of every trigger) while the load goes on
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            fired = {seq for hit in webhook.snapshot() for state, seq in parse_hit(hit) if state == "firing"}
            if set(triggers) <= fired:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # the last resolved notices
        sampler.stop()
        load_after_probes = os.getloadavg()
        stats = background.stop() if background is not None else None
        probe.close()

        # match the webhook to the probes
        firing_at: dict[int, int] = {}
        firing_count: dict[int, int] = {}
        resolved_count: dict[int, int] = {}
        unknown = 0
        for hit in webhook.snapshot():
            alerts = parse_hit(hit)
            if not alerts:
                unknown += 1
            for kind, seq in alerts:
                if kind == "firing":
                    firing_count[seq] = firing_count.get(seq, 0) + 1
                    firing_at.setdefault(seq, hit.received_ns)
                elif kind == "resolved":
                    resolved_count[seq] = resolved_count.get(seq, 0) + 1
        latencies = [(firing_at[seq] - t) / 1e6 for seq, t in sorted(triggers.items()) if seq in firing_at]
        missing = sorted(set(triggers) - set(firing_at))
        duplicates = sum(n - 1 for seq, n in firing_count.items() if seq in triggers and n > 1)
        metrics_text = http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text

        # stop the collector (flushes diagnostics and the notification log), then read the registry database
        _stop_collector(collector)
        stages = stage_breakdown(root / "data" / "registry.db", triggers, firing_at)
        cpu = sampler.cpu_percent()
        p99 = _percentile(latencies, 99)
        result: dict[str, Any] = {
            "probes_sent": len(triggers),
            "probes_acknowledged": sum(1 for s in probe.sent if s.kind == "trigger" and s.acked),
            "notifications_received": sum(1 for seq in triggers if seq in firing_at),
            "missing": len(missing),
            "duplicates": duplicates,
            "resolved_received": sum(1 for seq in triggers if resolved_count.get(seq)),
            "latency_ms": {
                **_stats(latencies),
                "mean": _round(sum(latencies) / len(latencies) if latencies else None),
            },
            "target_p99_ms": TARGET_P99_MS,
            "target_met": p99 is not None and p99 <= TARGET_P99_MS and not missing,
            "stages_ms": stages,
            "background": {
                "rate_requested_msgs_per_s": background_rate,
                "storm": storm_background or None,
                "published": stats.published if stats else 0,
                "acknowledged": stats.acknowledged if stats else 0,
                "failed": stats.failed if stats else 0,
                "publisher_acked_msgs_per_s": round(stats.rate, 1) if stats else 0.0,
                "collector_received_msgs_per_s_during_probes": round(
                    (received_after - received_before) / probe_seconds, 1) if probe_seconds > 0 else 0.0,
                **warmup,
            },
            "collector_cpu_percent": cpu.get("collector", 0.0),
            "cpu_percent": cpu,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after_probes],
            "method": (
                f"rule `{PROBE_RULE}` (flood, level_m > 100, no `for`, critical) on device `{PROBE_DEVICE}`; "
                f"route group_by [rule, device_id], group_wait 0s, group_interval {GROUP_INTERVAL}, no quiet "
                f"hours, apprise json:// to an http.server webhook in the bench process; {len(triggers)} triggers "
                f"(level_m = {PROBE_BASE:g} + n/1000) each cleared 0.25 s later (level_m = {PROBE_CLEAR:g}), one "
                f"pair per {PAIR_PERIOD_S} s, paho MQTT 5 QoS 1 on its own connection; latency = webhook receipt "
                f"(time.time_ns() when the request headers are in) − time.time_ns() just before publish(); "
                f"background publish_city(rate={background_rate:g}, qos=1, {len(sim_devices)} devices, "
                f"incidents on) from warm-up to the end; shipped default rules loaded; collector = "
                f"`nakhon run collectors` (InfluxDB sink, gzip off, defaults otherwise)"
            ),
            "machine": {
                "cores": os.cpu_count(),
                "cpu": _cpu_model(),
                "python": platform.python_version(),
                "mosquitto": _version([servers.require_binary("mosquitto"), "-h"]),
                "influxd": _version([servers.require_binary("influxd"), "version"]),
            },
            "details": {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "devices": len(sim_devices),
                "probe_seconds": round(probe_seconds, 2),
                "missing_probes": missing[:50],
                "webhook_posts": len(webhook.snapshot()),
                "webhook_posts_unmatched": unknown,
                "collector_notifications_total": _notifications_total(metrics_text, WEBHOOK_RECEIVER),
                "collector_exit_code": collector.returncode,
            },
        }
        if keep:
            result["details"]["workdir"] = str(root)
        return result


# --------------------------------------------------------------------------------------------------- outage


OUTAGE_RETRY = "{initial: 1s, max: 30s}"  # the webhook receiver's backoff in the outage scenario


def outage_alerts(hit: WebhookHit) -> list[tuple[str, int]]:
    """(state, probe sequence) of each alert in one structured (payload v1) POST."""
    out = []
    for alert in hit.body.get("alerts", []):
        value = alert.get("value")
        if alert.get("rule") == PROBE_RULE and isinstance(value, int | float) and value >= PROBE_BASE:
            out.append((str(alert.get("state")), probe_seq(float(value))))
        elif alert.get("rule") == PROBE_RULE:
            found = _PROBE_IN_BODY.search(str(alert.get("message_en", "")))
            if found:
                out.append((str(alert.get("state")), probe_seq(float(found.group(1)))))
    return out


def run_bench_notify_outage(
    *,
    outage_s: float = 300.0,
    probes: int = 20,
    devices: int = 50,
    background_rate: float = 200.0,
    workdir: Path | None = None,
    keep: bool = False,
    wait_s: float = 120.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Alerts raised while the webhook receiver is down (HTTP 500 for `outage_s`), then it recovers: how many
    firing and resolved notifications arrive after it, how many twice, how long after the recovery."""
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    with notify_stack(prefix="nakhon-bench-outage-", devices=devices, webhook=WebhookReceiver(down=True),
                      workdir=workdir, keep=keep, say=say, retry=OUTAGE_RETRY) as stack:
        broker, webhook, http, metrics_port = stack.broker, stack.webhook, stack.http, stack.metrics_port
        sim_devices, collector = stack.sim_devices, stack.collector
        assert collector is not None
        background: Background | None = None
        if sim_devices and background_rate > 0:
            background = stack.background = Background(broker.url, sim_devices, background_rate)
            background.start()
        probe = stack.probe = ProbePublisher(broker.port, stack.probe_device.topic)
        say(f"bench-notify outage: webhook down for {outage_s:g} s, {probes} alerts raised (and cleared) meanwhile")
        started = time.monotonic()
        period = outage_s / (probes + 1)
        for seq in range(1, probes + 1):
            time.sleep(max(0.0, started + seq * period - time.monotonic()))
            probe.publish(seq, "trigger")
            time.sleep(min(1.0, period / 2))
            probe.publish(seq, "clear")
        time.sleep(max(0.0, started + outage_s - time.monotonic()))
        received_during = len(webhook.snapshot())
        webhook.recover()
        recovered_ns = time.time_ns()
        say("bench-notify outage: webhook back")
        deadline = time.monotonic() + wait_s
        firing: dict[int, int] = {}
        resolved: dict[int, int] = {}
        while time.monotonic() < deadline:
            firing, resolved = {}, {}
            for hit in webhook.snapshot():
                for state, seq in outage_alerts(hit):
                    target = firing if state == "firing" else resolved
                    target[seq] = target.get(seq, 0) + 1
            if len(firing) >= probes and len(resolved) >= probes:
                break
            time.sleep(0.2)
        time.sleep(2.0)  # anything sent twice would arrive now
        firing, resolved, last_ns = {}, {}, recovered_ns
        for hit in webhook.snapshot():
            for state, seq in outage_alerts(hit):
                target = firing if state == "firing" else resolved
                target[seq] = target.get(seq, 0) + 1
                last_ns = max(last_ns, hit.received_ns)
        if background is not None:
            background.stop()
        probe.close()
        metrics_text = http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        _stop_collector(collector)
        wanted = set(range(1, probes + 1))
        return {
            "scenario": "receiver_outage",
            "outage_s": outage_s,
            "alerts_raised_during_outage": probes,
            "received_during_outage": received_during,
            "firing_delivered_after": len(wanted & set(firing)),
            "resolved_delivered_after": len(wanted & set(resolved)),
            "missing_firing": sorted(wanted - set(firing)),
            "missing_resolved": sorted(wanted - set(resolved)),
            "duplicates": sum(n - 1 for n in [*firing.values(), *resolved.values()] if n > 1),
            "refused_attempts_during_outage": webhook.refused,
            "all_delivered_after_s": round((last_ns - recovered_ns) / 1e9, 2),
            "target_met": wanted <= set(firing) and wanted <= set(resolved)
            and all(n == 1 for n in [*firing.values(), *resolved.values()]),
            "method": (
                f"`nakhon run collectors` with the shipped rules plus `{PROBE_RULE}`; webhook receiver (payload v1) "
                f"answering HTTP 500 for {outage_s:g} s then 200; receiver retry {OUTAGE_RETRY}; {probes} probe "
                f"alerts raised evenly during the outage, each cleared ~1 s later (firing and resolve both owed); "
                f"background publish_city(rate={background_rate:g}, qos=1, {len(sim_devices)} devices)"
            ),
            "details": {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "collector_notifications_total": _notifications_total(metrics_text, WEBHOOK_RECEIVER),
                "webhook_posts": len(webhook.snapshot()),
                "cores": os.cpu_count(),
            },
        }


__all__ = [
    "REQUIRED_KEYS",
    "NotifyStack",
    "WebhookReceiver",
    "notify_stack",
    "parse_hit",
    "run_bench_notify",
    "run_bench_notify_outage",
]
