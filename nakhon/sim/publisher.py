"""Publish the simulated city to an MQTT broker, paced, counting exactly what the broker acknowledged.

    stats = await publish_city("mqtt://sim:secret@127.0.0.1:1883", devices=City().devices(), rate=50,
                               duration_s=60, count=None, qos=1, client_id="nakhon-sim")

- paho-mqtt 2.x (`CallbackAPIVersion.VERSION2`, MQTT 5), its network loop driven by hand from one worker thread
  (or from each of N worker processes with `processes=N`), so the caller's event loop stays free.
- Pacing: a token bucket at `rate` messages/s in total (`rate=0`: as fast as the broker acknowledges).
- Backpressure: at most `max_inflight` messages are unacknowledged at any time (paho's in-flight window is
  the same size), so a slow broker slows the publisher down instead of growing a queue.
- Counting: `acknowledged` counts positive PUBACKs (QoS 1; at QoS 0 there is no PUBACK and it counts
  messages written to the socket). A PUBACK with a failure reason code (MQTT 5, e.g. 135 Not authorized)
  counts as `failed`, as does every message still unacknowledged when the run ends (after `drain_timeout_s`).
- The password in the URL is never logged: logs and errors name `mqtt://user@host:port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import queue
import select
import signal
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from nakhon.sim.city import SimDevice
from nakhon.sim.signals import Incident, Simulation, schedule_incidents

log = logging.getLogger("nakhon.sim")
_mqtt_log = logging.getLogger("nakhon.sim.mqtt")

ProgressCallback = Callable[["PublishStats"], None]


# --------------------------------------------------------------------------------------------------- URL


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    def redacted(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """`mqtt://user:pass@host:port` (also `tcp://`; `mqtts://` / `ssl://` for TLS, default ports 1883 / 8883)."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "tcp", "mqtts", "ssl", "tls"):
        raise ValueError(f"not an MQTT URL (scheme {scheme!r}): {redact_url(url)}")
    tls = scheme in ("mqtts", "ssl", "tls")
    if not parts.hostname:
        raise ValueError(f"MQTT URL without a host: {redact_url(url)}")
    return MqttTarget(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
    )


def redact_url(url: str) -> str:
    """The URL with any password removed, for logs and error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return parts._replace(netloc=f"{user}@{netloc}").geturl()
    except ValueError:
        return "<unparseable MQTT URL>"


# --------------------------------------------------------------------------------------------------- stats


@dataclass(slots=True)
class PublishStats:
    """What a run did. `published` = messages handed to the client; `acknowledged` = positive PUBACKs;
    `failed` = rejected or never acknowledged; `seconds` = first publish to last acknowledgement."""

    published: int = 0
    acknowledged: int = 0
    failed: int = 0
    seconds: float = 0.0
    malformed: int = 0
    acked: list[tuple[str, int]] | None = None  # (device_id in the topic, ts) of acknowledged messages
    started_at: float = 0.0  # wall clock (epoch s) of the first publish

    @property
    def rate(self) -> float:
        """Acknowledged messages per second."""
        return self.acknowledged / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"published {self.published}, acknowledged {self.acknowledged}, failed {self.failed}, "
            f"malformed {self.malformed}, {self.seconds:.1f} s, {self.rate:,.0f} msg/s acknowledged"
        )


@dataclass(slots=True)
class _Job:
    """Everything one publisher (thread or process) needs; picklable for `spawn`."""

    url: str
    devices: list[SimDevice]
    rate: float
    duration_s: float | None
    count: int | None
    qos: int
    client_id: str
    seed: int
    speed: float
    malformed_rate: float
    start_ms: int
    wall0_ms: float
    incidents: list[Incident]
    max_inflight: int
    drain_timeout_s: float
    record_acked: bool
    connect_timeout_s: float = 15.0
    mqtt_version: int = 5  # 4 = MQTT 3.1.1, for brokers without MQTT 5 (the embedded demo broker)


class _State:
    """Counters of one publisher; paho's callbacks run in the publishing thread (the loop is driven by hand)."""

    def __init__(self, record: bool) -> None:
        self.published = 0
        self.acked = 0
        self.failed = 0
        self.malformed = 0
        self.record = record
        self.pending: dict[int, tuple[str, int]] = {}
        self.early: dict[int, bool] = {}  # PUBACKs that arrived before publish() returned the mid
        self.acked_keys: list[tuple[str, int]] = []
        self.connected = threading.Event()
        self.connect_error: str | None = None
        self.first_publish = 0.0
        self.last_ack = 0.0

    @property
    def outstanding(self) -> int:
        return self.published - self.acked - self.failed

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.connect_error = str(reason)
        else:
            log.debug("connected")
        self.connected.set()

    def on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("disconnected from the broker (%s); paho reconnects and resends in-flight messages", reason)

    def on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        ok = not getattr(reason, "is_failure", False)
        if ok:
            self.acked += 1
        else:
            self.failed += 1
        self.last_ack = time.perf_counter()
        if self.record:
            key = self.pending.pop(mid, None)
            if key is None:
                self.early[mid] = ok
            elif ok:
                self.acked_keys.append(key)

    def record_publish(self, mid: int, key: tuple[str, int]) -> None:
        early = self.early.pop(mid, None)
        if early is None:
            self.pending[mid] = key
        elif early:
            self.acked_keys.append(key)


# --------------------------------------------------------------------------------------------------- one publisher


class _Connection:
    """A paho client driven by hand from the publishing thread (no paho thread: no lock hand-offs per message,
    ~1.7× the throughput of `loop_start()` here): `service()` reads PUBACKs, flushes writes, keeps alive and
    reconnects."""

    def __init__(self, job: _Job, state: _State) -> None:
        self.target = parse_mqtt_url(job.url)
        self.state = state
        self.client_id = job.client_id
        protocol = MQTTProtocolVersion.MQTTv5 if job.mqtt_version == 5 else MQTTProtocolVersion.MQTTv311
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=job.client_id, protocol=protocol)
        client.enable_logger(_mqtt_log)
        if self.target.username is not None:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            client.tls_set_context(ssl.create_default_context())
        client.max_inflight_messages_set(job.max_inflight)
        client.on_connect = state.on_connect
        client.on_disconnect = state.on_disconnect
        client.on_publish = state.on_publish
        self.client = client
        self.next_misc = 0.0
        self.next_reconnect = 0.0

    def connect(self, timeout: float) -> None:
        log.info("publishing to %s as %s", self.target.redacted(), self.client_id)
        try:
            self.client.connect(self.target.host, self.target.port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {self.target.redacted()}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + timeout
        while not self.state.connected.is_set() and time.monotonic() < deadline:
            self.service(0.05)
        if not self.state.connected.is_set() or self.state.connect_error:
            reason = self.state.connect_error or f"no CONNACK within {timeout:.0f} s"
            with contextlib.suppress(Exception):
                self.client.disconnect()
            raise ConnectionError(f"broker {self.target.redacted()} refused the connection: {reason}")

    def service(self, timeout: float) -> None:
        """Wait up to `timeout` for the socket, then read what arrived and write what is pending."""
        client = self.client
        now = time.monotonic()
        sock = client.socket()
        if sock is None:
            if now >= self.next_reconnect and self.state.connected.is_set():
                self.next_reconnect = now + 1.0
                try:
                    client.reconnect()  # in-flight messages are resent once the broker accepts us again
                    log.info("reconnected to %s", self.target.redacted())
                except OSError as exc:
                    log.warning("reconnecting to %s failed: %s", self.target.redacted(), exc)
            if timeout > 0:
                time.sleep(min(timeout, 0.1))
            return
        wlist = [sock] if client.want_write() else []
        readable, writable, _ = select.select([sock], wlist, [], timeout)
        if readable:
            client.loop_read()
        if writable:
            client.loop_write()
        if now >= self.next_misc:
            client.loop_misc()
            self.next_misc = now + 1.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
            self.service(0)


def _run_job(
    job: _Job,
    stop: Any,
    report: Callable[[_State], None] | None = None,
    ready: Callable[[], None] | None = None,
    go: Any = None,
) -> PublishStats:
    """Publish `job` until its count / duration is reached or `stop` is set; then wait for the last PUBACKs."""
    state = _State(job.record_acked)
    conn = _Connection(job, state)
    conn.connect(job.connect_timeout_s)
    try:
        if ready is not None:
            ready()
        if go is not None:
            while not go.is_set() and not stop.is_set():
                conn.service(0.05)
        sim = Simulation(job.devices, seed=job.seed, malformed_rate=job.malformed_rate, incidents=job.incidents)
        window = job.max_inflight
        rate = job.rate
        burst = max(1.0, rate * 0.05)
        tokens = 1.0
        qos = job.qos
        start = last = time.perf_counter()
        started_at = time.time()
        state.first_publish = start
        deadline = start + job.duration_s if job.duration_s is not None else None
        count = job.count
        next_report = start + 0.2
        speed = job.speed
        publish = conn.client.publish
        ok_codes = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
        sent = 0
        while not stop.is_set():
            if count is not None and sent >= count:
                break
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                break
            if report is not None and now >= next_report:
                state.malformed = sim.malformed
                report(state)
                next_report = now + 0.2
            if state.outstanding >= window:  # backpressure: wait for PUBACKs
                conn.service(0.05)
                continue
            if rate > 0:
                tokens = min(burst, tokens + (now - last) * rate)
                last = now
                if tokens < 1.0:
                    conn.service((1.0 - tokens) / rate)
                    continue
                tokens -= 1.0
            wall_ms = time.time() * 1000
            # never into the future: a fast run that catches up with the real clock goes on in real time
            sim_ms = int(min(wall_ms, job.start_ms + speed * (wall_ms - job.wall0_ms)))
            message = sim.next_message(sim_ms)
            info = publish(message.topic, message.encode(), qos=qos)
            state.published += 1
            sent += 1
            if info.rc in ok_codes:  # NO_CONN: paho keeps the message and sends it after reconnecting
                if job.record_acked:
                    state.record_publish(info.mid, (message.device_id, message.ts_ms))
            else:
                state.failed += 1
            if sent & 31 == 0:
                conn.service(0)
        state.malformed = sim.malformed
        # Drain: wait for the PUBACKs of what is still in flight.
        drain_deadline = time.perf_counter() + job.drain_timeout_s
        while state.outstanding > 0 and time.perf_counter() < drain_deadline:
            conn.service(0.05)
        unacked = max(0, state.outstanding)
        state.failed += unacked
        if unacked:
            log.warning("%d messages were not acknowledged within %.0f s", unacked, job.drain_timeout_s)
        end = max(state.last_ack, state.first_publish) if state.acked else time.perf_counter()
        if report is not None:
            report(state)
        return PublishStats(
            published=state.published,
            acknowledged=state.acked,
            failed=state.failed,
            seconds=end - state.first_publish,
            malformed=state.malformed,
            acked=list(state.acked_keys) if job.record_acked else None,
            started_at=started_at,
        )
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------- processes


def _child_main(job: _Job, index: int, counters: Any, results: Any, stop: Any, go: Any) -> None:
    """One publisher process (spawned): reports progress in `counters`, its result on `results`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop

    def report(state: _State) -> None:
        base = index * 3
        counters[base], counters[base + 1], counters[base + 2] = state.published, state.acked, state.failed

    try:
        stats = _run_job(job, stop, report, ready=lambda: results.put(("ready", index, None)), go=go)
        results.put(("result", index, (stats, stats.started_at, stats.started_at + stats.seconds)))
    except BaseException as exc:  # report any failure to the parent
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))


async def _run_processes(
    jobs: list[_Job], on_progress: ProgressCallback | None, interval: float, stop_event: threading.Event | None
) -> PublishStats:
    ctx = mp.get_context("spawn")
    counters = ctx.Array("q", 3 * len(jobs), lock=False)
    results = ctx.Queue()
    stop = ctx.Event()
    go = ctx.Event()
    procs = [
        ctx.Process(target=_child_main, args=(job, i, counters, results, stop, go), daemon=True)
        for i, job in enumerate(jobs)
    ]
    for proc in procs:
        proc.start()
    loop = asyncio.get_running_loop()
    ready = 0
    done: dict[int, tuple[PublishStats, float, float]] = {}
    errors: list[str] = []

    async def next_result(timeout: float) -> tuple[str, int, Any] | None:
        try:
            return await loop.run_in_executor(None, results.get, True, timeout)  # type: ignore[no-any-return]
        except queue.Empty:
            return None

    try:
        while len(done) + len(errors) < len(jobs):
            if stop_event is not None and stop_event.is_set():
                stop.set()
            item = await next_result(interval)
            if item is None:
                if on_progress is not None:
                    on_progress(_sum_counters(counters, len(jobs)))
                if all(not p.is_alive() for p in procs) and results.empty():
                    missing = [i for i in range(len(jobs)) if i not in done]
                    errors.extend(f"publisher {i} exited without a result" for i in missing)
                    break
                continue
            kind, index, payload = item
            if kind == "ready":
                ready += 1
                if ready == len(jobs):
                    go.set()  # all connected: start together so the measured time is the common one
            elif kind == "result":
                done[index] = payload
            else:
                errors.append(f"publisher {index}: {payload}")
                stop.set()
                go.set()
    except asyncio.CancelledError:
        stop.set()
        go.set()
        raise
    finally:
        for proc in procs:
            await loop.run_in_executor(None, proc.join, 30)
            if proc.is_alive():
                proc.kill()
    if errors:
        raise ConnectionError("; ".join(errors))
    total = PublishStats(acked=[] if jobs[0].record_acked else None)
    starts, ends = [], []
    for stats, start_wall, end_wall in done.values():
        total.published += stats.published
        total.acknowledged += stats.acknowledged
        total.failed += stats.failed
        total.malformed += stats.malformed
        if total.acked is not None and stats.acked is not None:
            total.acked.extend(stats.acked)
        starts.append(start_wall)
        ends.append(end_wall)
    total.seconds = max(ends) - min(starts) if starts else 0.0
    total.started_at = min(starts) if starts else 0.0
    return total


def _sum_counters(counters: Any, n: int) -> PublishStats:
    return PublishStats(
        published=sum(counters[i * 3] for i in range(n)),
        acknowledged=sum(counters[i * 3 + 1] for i in range(n)),
        failed=sum(counters[i * 3 + 2] for i in range(n)),
    )


# --------------------------------------------------------------------------------------------------- API


def default_start_ms(speed: float, duration_s: float | None, now_ms: float | None = None) -> int:
    """Where simulated time starts: now for real time; for a faster run of known duration, early enough that
    the run ends at the real now (so a demo fills the last hours of the dashboards, never the future)."""
    now = time.time() * 1000 if now_ms is None else now_ms
    if speed > 1 and duration_s:
        return int(now - (speed - 1) * duration_s * 1000)
    return int(now)


async def publish_city(
    url: str,
    *,
    devices: list[SimDevice],
    rate: float = 50.0,
    duration_s: float | None = None,
    count: int | None = None,
    qos: int = 1,
    client_id: str = "nakhon-sim",
    on_progress: ProgressCallback | None = None,
    processes: int = 1,
    record_acked: bool = False,
    seed: int = 1,
    speed: float = 1.0,
    malformed_rate: float = 0.0,
    start_ms: int | None = None,
    incidents: bool | list[Incident] = True,
    max_inflight: int = 1000,
    drain_timeout_s: float = 30.0,
    progress_interval_s: float = 1.0,
    stop_event: threading.Event | None = None,
    mqtt_version: int = 5,
    wall0_ms: float | None = None,
) -> PublishStats:
    """Publish the devices' messages at `rate` msg/s in total until `count` messages or `duration_s` seconds
    (whichever comes first; neither: until `stop_event` is set or the task is cancelled).

    `processes=N` splits the devices (and the rate and count) over N spawned publisher processes, which start
    together once all are connected; the stats are summed and `seconds` spans all of them.
    `incidents=True` schedules every incident kind over the simulated span of the run; a list uses those.
    `on_progress` is called from the caller's event loop about every `progress_interval_s`.
    Simulated time is `start_ms + speed × (wall − wall0_ms)`, capped at the wall clock (never the future);
    pass `wall0_ms` to share it with a `nakhon.sim.clock.SimClock` (the demo's rules engine).
    """
    if qos not in (0, 1, 2):
        raise ValueError("qos must be 0, 1 or 2")
    if rate < 0:
        raise ValueError("rate must be ≥ 0 (0 = as fast as the broker acknowledges)")
    if not devices:
        raise ValueError("no devices to publish")
    if processes < 1:
        raise ValueError("processes must be ≥ 1")
    parse_mqtt_url(url)  # fail early on a bad URL
    wall0_ms = time.time() * 1000 if wall0_ms is None else wall0_ms
    expected_s = duration_s if duration_s is not None else (count / rate if count and rate > 0 else None)
    start = default_start_ms(speed, expected_s, wall0_ms) if start_ms is None else start_ms
    if incidents is True:
        span_ms = int(speed * (expected_s if expected_s is not None else 3600) * 1000)
        scheduled = schedule_incidents(devices, start, max(span_ms, 1000), seed=seed)
    elif incidents is False:
        scheduled = []
    else:
        scheduled = list(incidents)
    processes = min(processes, len(devices))
    if count is not None:
        processes = max(1, min(processes, count))
    jobs = []
    for i in range(processes):
        share = count // processes + (1 if i < count % processes else 0) if count is not None else None
        jobs.append(
            _Job(
                url=url,
                devices=devices[i::processes],
                rate=rate / processes,
                duration_s=duration_s,
                count=share,
                qos=qos,
                client_id=client_id if processes == 1 else f"{client_id}-{i}",
                seed=seed,
                speed=speed,
                malformed_rate=malformed_rate,
                start_ms=start,
                wall0_ms=wall0_ms,
                incidents=scheduled,
                max_inflight=max(1, max_inflight // processes) if processes > 1 else max_inflight,
                drain_timeout_s=drain_timeout_s,
                record_acked=record_acked,
                mqtt_version=mqtt_version,
            )
        )
    if processes > 1:
        return await _run_processes(jobs, on_progress, progress_interval_s, stop_event)

    stop = stop_event or threading.Event()
    shared: dict[str, PublishStats] = {}

    def report(state: _State) -> None:
        shared["progress"] = PublishStats(state.published, state.acked, state.failed, 0.0, state.malformed)

    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, _run_job, jobs[0], stop, report)
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=progress_interval_s)
            if done:
                return future.result()
            if on_progress is not None and "progress" in shared:
                on_progress(shared["progress"])
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.shield(future)
        raise


__all__ = ["MqttTarget", "PublishStats", "default_start_ms", "parse_mqtt_url", "publish_city", "redact_url"]
