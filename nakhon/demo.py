"""`nakhon demo`: everything in one process, nothing to install — an embedded MQTT broker (amqtt), the SQLite
store, the collectors with the rules engine, the gateway API, and a simulated Laem Chabang publishing to it.

The embedded broker speaks only MQTT 3.1.1, on which the collector's client acknowledges on receipt; the demo
is for seeing the system, production runs against Mosquitto or EMQX over MQTT 5 (see README).

What it shows is true (nakhon/demo_story.py): simulated time (×speed) drives the city and the rules alike, so
there are no false "silent" alerts; one incident — a child left on a van, a canal rising — goes end to end,
from the reading to the duty officer's message and its acknowledgement through the signed link.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from collectors.feeds import FEED_SPECS
from collectors.transport.mqtt import MQTTv311
from core.time import BANGKOK
from nakhon.app import App, start_app
from nakhon.config import Settings
from nakhon.demo_story import CATCH_UP_S, RECEIVER, DemoInbox, DutyOfficer, message_text, story_incidents, write_routing
from nakhon.registry_wiring import import_devices_csv
from nakhon.sim.clock import SimClock, catch_up_start_ms

SHOWN_FIELDS = {
    "air": ("pm25_ugm3", "aqi_th"),
    "flood": ("level_m", "level_pct_bank"),
    "energy": ("power_kw", "tou"),
    "bus": ("speed_kmh", "occupancy"),
}


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_port(preferred: int) -> int:
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_embedded_broker(port: int) -> Any:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    return broker


def counter_values(name: str) -> dict[tuple[str, ...], float]:
    """Current samples of a Prometheus counter, by label values."""
    values: dict[tuple[str, ...], float] = {}
    for metric in REGISTRY.collect():
        if metric.name != name:
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                values[tuple(sample.labels.values())] = sample.value
    return values


class DemoView:
    """The live terminal view: readings per second per feed, quarantined, last values, alerts."""

    def __init__(
        self,
        running: App,
        started: float,
        publish_stats: Callable[[], Any],
        clock: SimClock | None = None,
        inbox: DemoInbox | None = None,
        officer: DutyOfficer | None = None,
    ) -> None:
        self.running = running
        self.started = started
        self.publish_stats = publish_stats
        self.clock = clock
        self.inbox = inbox
        self.officer = officer
        self._last_stored: dict[str, float] = {}
        self._last_time = time.monotonic()
        self.rates: dict[str, float] = {}

    def sample(self) -> None:
        now = time.monotonic()
        stored = {labels[0]: v for labels, v in counter_values("nakhon_points_stored").items()}
        elapsed = max(now - self._last_time, 1e-6)
        self.rates = {feed: (stored.get(feed, 0.0) - self._last_stored.get(feed, 0.0)) / elapsed for feed in stored}
        self._last_stored, self._last_time = stored, now

    def render(self) -> Group:
        stored = {labels[0]: v for labels, v in counter_values("nakhon_points_stored").items()}
        quarantined: dict[str, float] = {}
        for (feed, _reason), value in counter_values("nakhon_messages_quarantined").items():
            quarantined[feed] = quarantined.get(feed, 0.0) + value
        table = Table(title="nakhon demo · แหลมฉบัง (Laem Chabang)", expand=True)
        for column in ("feed", "readings/s", "stored", "quarantined", "last values"):
            table.add_column(column)
        sink = self.running.sink
        for feed, spec in FEED_SPECS.items():
            last = ""
            latest = getattr(sink, "latest", None)
            if latest is not None:
                points = latest(spec.measurement, limit=1)
                if points:
                    point = points[0]
                    values = {**point.fields, **point.tags}
                    shown = [f"{k}={_fmt(values[k])}" for k in SHOWN_FIELDS[feed] if k in values]
                    when = datetime.fromtimestamp(point.time_ns / 1e9, UTC).astimezone(BANGKOK)
                    last = f"{point.tags.get('device_id', '')} {' '.join(shown)} @ {when:%H:%M:%S}"
            table.add_row(
                f"{feed} ({spec.description_th})",
                f"{self.rates.get(feed, 0.0):.1f}",
                f"{int(stored.get(feed, 0))}",
                f"{int(quarantined.get(feed, 0))}",
                last,
            )
        stats = self.publish_stats()
        alerts = alert_lines(self.running)
        sim_now = ""
        if self.clock is not None:
            sim_now = (
                f"simulated time {datetime.fromtimestamp(self.clock.now_ms() / 1000, BANGKOK):%d %b %H:%M} "
                f"(×{self.clock.speed:g}) · "
            )
        footer = (
            f"published {getattr(stats, 'published', 0)} · acknowledged {getattr(stats, 'acknowledged', 0)} · "
            f"running {time.monotonic() - self.started:.0f}s · {sim_now}times in Asia/Bangkok · Ctrl-C to stop"
        )
        parts: list[Any] = [table, Panel("\n".join(alerts) or "no alerts yet", title="alerts · การแจ้งเตือน")]
        if self.inbox is not None:
            latest = self.inbox.messages[-1] if self.inbox.messages else None
            text = message_text(latest) if latest is not None else "no message yet / ยังไม่มีข้อความ"
            if self.officer is not None and self.officer.log_lines:
                text += "\n\n" + "\n".join(self.officer.log_lines[-2:])
            parts.append(Panel(text, title=f"the duty officer's phone · ข้อความถึงเจ้าหน้าที่เวร ({RECEIVER})"))
        parts.append(footer)
        return Group(*parts)


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def alert_lines(running: App, limit: int = 6) -> list[str]:
    rules = running.rules
    store = getattr(getattr(rules, "engine", None), "store", None) if rules is not None else None
    list_alerts = getattr(store, "list_alerts", None)
    if list_alerts is None:
        return []
    try:
        alerts = list_alerts(limit=limit)
    except Exception:  # the view must never take the demo down
        return []
    lines = []
    for alert in alerts:
        get = alert.get if isinstance(alert, dict) else lambda k, a=alert: getattr(a, k, "")
        lines.append(f"[{get('severity')}] {get('state')} {get('rule')} {get('device_id')} — {get('message_en')}")
    return lines


async def run_demo(
    settings: Settings,
    stop: asyncio.Event,
    *,
    duration: float | None,
    devices: int,
    rate: float,
    speed: float,
    live: bool,
) -> None:
    from nakhon.rules_wiring import RulesExtras
    from nakhon.sim.city import City
    from nakhon.sim.publisher import publish_city

    console = Console()
    broker_port = pick_port(1883)
    broker = await start_embedded_broker(broker_port)
    gateway_port = pick_port(settings.gateway.port)
    routing = write_routing(Path(settings.data_dir))
    demo_settings = settings.model_copy(
        update={
            "mqtt": settings.mqtt.model_copy(
                update={"url": f"mqtt://127.0.0.1:{broker_port}", "client_id": "nakhon-demo-collector"}
            ),
            "metrics": settings.metrics.model_copy(update={"port": pick_port(settings.metrics.port)}),
            # a faster simulated clock runs ahead of the real one by design: not a device with a wrong clock
            "domain": settings.domain.model_copy(update={"time_max_future_s": None}) if speed > 1 else settings.domain,
            "gateway": settings.gateway.model_copy(update={"public_url": f"http://127.0.0.1:{gateway_port}"}),
            "rules": settings.rules.model_copy(update={"routes_file": str(routing)}),
        }
    )
    city = City(slug=settings.city) if settings.city != "laem-chabang" else City()
    sim_devices = city.devices(devices)
    summary = await asyncio.to_thread(import_devices_csv, demo_settings, city.registry_csv(sim_devices))
    await asyncio.to_thread(name_city, demo_settings, city.slug, city.name, city.name_en)
    # One simulated clock for the city and the rules: a run of known length ends at the real now, an open-ended
    # one catches up with it after CATCH_UP_S and then goes on in real time.
    wall0_ms = time.time() * 1000
    start_ms = catch_up_start_ms(speed, duration if duration else CATCH_UP_S, wall0_ms)
    clock = SimClock(start_ms, speed, wall0_ms)
    inbox = DemoInbox()
    extras = RulesExtras(
        clock=clock,
        notifiers={RECEIVER: inbox},
        tick_interval_s=1.0,  # a simulated minute at ×60
    )
    running = await start_app(
        demo_settings, "all", mqtt_protocol=MQTTv311, gateway_port=gateway_port, rules_extras=extras
    )
    token = _session_token(running)
    console.print(f"[bold]nakhon demo[/bold]: {len(sim_devices)} simulated devices registered ({summary})")
    console.print(f"  MQTT broker (embedded):  mqtt://127.0.0.1:{broker_port}  topics city/{city.slug}/<feed>/<id>")
    console.print(f"  gateway API:             http://127.0.0.1:{gateway_port}/docs")
    console.print(f"  admin API token (this session): {token}")
    metrics_port = running.metrics.port if running.metrics else 0
    console.print(f"  metrics and health:      http://{settings.metrics.host}:{metrics_port}/metrics  /healthz")

    publish_stop = threading.Event()
    progress: dict[str, Any] = {}
    publisher = asyncio.create_task(
        publish_city(
            f"mqtt://127.0.0.1:{broker_port}",
            devices=sim_devices,
            rate=rate,
            duration_s=duration,
            qos=1,
            client_id="nakhon-demo-sim",
            speed=speed,
            malformed_rate=0.01,
            stop_event=publish_stop,
            on_progress=lambda stats: progress.__setitem__("stats", stats),
            mqtt_version=4,
            start_ms=start_ms,
            wall0_ms=wall0_ms,
            incidents=story_incidents(sim_devices, start_ms),
        ),
        name="simulated-city",
    )
    officer = DutyOfficer(inbox)
    officer_stop = asyncio.Event()
    officer_task = asyncio.create_task(officer.run(officer_stop), name="demo-duty-officer")
    started = time.monotonic()
    view = DemoView(running, started, lambda: progress.get("stats"), clock, inbox, officer)
    deadline = None if duration is None else started + duration
    try:
        if live:
            with Live(view.render(), console=console, refresh_per_second=2, transient=False) as screen:
                while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                    await _wait(stop, 1.0)
                    view.sample()
                    screen.update(view.render())
        else:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                await _wait(stop, 1.0)
    finally:
        publish_stop.set()
        stats = None
        with contextlib.suppress(Exception):
            stats = await asyncio.wait_for(publisher, 35)
        await asyncio.sleep(0.5)  # let the last messages reach the store
        officer_stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(officer_task, 15)
        view.sample()
        alert_counts = count_alerts(running)
        await running.stop()
        await broker.shutdown()
    print_summary(console, running, stats, time.monotonic() - started, alert_counts, inbox, officer)


def name_city(settings: Settings, slug: str, name_th: str, name_en: str) -> None:
    """The city's display names in the registry, as `nakhon devices city-name` sets them."""
    from nakhon.registry_wiring import open_registry

    store = open_registry(settings)
    try:
        store.cities.set(slug, name_th, name_en, actor="demo")
    finally:
        store.close()


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def _session_token(running: App) -> str:
    name = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}-{threading.get_ident() % 10000}"
    _record, token = running.registry.tokens.create(name, "admin", actor="demo")
    return token


def count_alerts(running: App) -> dict[str, int]:
    """Alerts raised during the run, by rule (the store the engine wrote)."""
    store = getattr(getattr(running.rules, "engine", None), "store", None) if running.rules is not None else None
    counts: dict[str, int] = {}
    with contextlib.suppress(Exception):
        for alert in store.list_alerts(limit=None):  # type: ignore[union-attr]
            counts[alert.rule] = counts.get(alert.rule, 0) + 1
            if alert.ack_by:
                counts["acknowledged · " + alert.ack_by] = counts.get("acknowledged · " + alert.ack_by, 0) + 1
    return counts


def print_summary(
    console: Console,
    running: App,
    stats: Any,
    seconds: float,
    alert_counts: dict[str, int] | None = None,
    inbox: DemoInbox | None = None,
    officer: DutyOfficer | None = None,
) -> None:
    stored = {labels[0]: v for labels, v in counter_values("nakhon_points_stored").items()}
    quarantined: dict[str, float] = {}
    for (_feed, reason), value in counter_values("nakhon_messages_quarantined").items():
        quarantined[reason] = quarantined.get(reason, 0.0) + value
    table = Table(title=f"nakhon demo summary ({seconds:.0f} s)")
    table.add_column("what")
    table.add_column("count", justify="right")
    if stats is not None:
        table.add_row("published (simulated city)", str(stats.published))
        table.add_row("acknowledged by the broker", str(stats.acknowledged))
    for feed in FEED_SPECS:
        table.add_row(f"stored · {feed}", str(int(stored.get(feed, 0))))
    table.add_row("stored · alerts", str(int(stored.get("alerts", 0))))
    for reason, value in sorted(quarantined.items()):
        table.add_row(f"quarantined · {reason}", str(int(value)))
    for rule, value in sorted((alert_counts or {}).items()):
        table.add_row(f"alerts · {rule}" if not rule.startswith("acknowledged") else rule, str(value))
    if inbox is not None:
        table.add_row(f"notifications to {inbox.name}", str(inbox.delivered))
    if officer is not None:
        table.add_row("acknowledged through the link", str(officer.acknowledged))
    console.print(table)
    for line in alert_lines(running, limit=10):
        console.print(line)
    first = next((m for m in (inbox.messages if inbox else []) if m.kind == "firing"), None)
    if first is not None:
        console.print(Panel(message_text(first, max_lines=40), title=f"the first message to {RECEIVER}"))
