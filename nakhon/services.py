"""Running nakhon's services together: registry, collectors (with the rules engine on their stream) and the
gateway API. Used by `nakhon run` and `nakhon demo`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from collectors.diagnostics import RecentMessage
from collectors.directory import DeviceDirectory
from collectors.health import MetricsServer
from collectors.service import CollectorService
from collectors.sinks.base import Sink
from core.model import DeviceInfo, Point, Reading
from gateway.registry.directory import RegistryDirectory
from gateway.registry.store import RecentMessage as RegistryRecentMessage
from gateway.registry.store import RegistryStore
from nakhon.app import build_collector, make_sink, mqtt_endpoint
from nakhon.config import Settings

log = logging.getLogger(__name__)


def open_registry(settings: Settings) -> RegistryStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = RegistryStore(settings.registry.url)
    store.migrate()
    sync_profiles(settings, store)
    return store


def sync_profiles(settings: Settings, store: RegistryStore) -> list[str]:
    """Give every loaded YAML profile (shipped and `[domain] profiles_dir`) its registry row when missing."""
    from collectors.mapping.profiles import ProfileError, all_profiles
    from gateway.errors import ConflictError
    from gateway.registry.schemas import ProfileSpec
    from nakhon.config import ConfigError

    try:
        profiles = all_profiles(settings.domain.profiles_dir)
        specs = [
            ProfileSpec(
                name=p.name, feed=p.feed, description=p.description[:200], expected_fields=p.expected_fields,
                field_mapping=p.name, default_thresholds=p.default_thresholds, heartbeat_s=p.heartbeat_s,
            )
            for p in profiles.values()
        ]
        return store.ensure_profiles(specs, actor="profiles")
    except (ProfileError, ConflictError) as exc:
        raise ConfigError(f"domain.profiles_dir: {exc}") from None


def make_provisioner(settings: Settings) -> Any:
    """The Mosquitto dynamic-security provisioner, when an admin account is configured (else None)."""
    gateway = settings.gateway
    if not gateway.mqtt_admin_username or gateway.mqtt_admin_password is None:
        return None
    from gateway.broker.dynsec import MosquittoProvisioner

    endpoint = mqtt_endpoint(settings)
    return MosquittoProvisioner(
        endpoint.host,
        endpoint.port,
        gateway.mqtt_admin_username,
        gateway.mqtt_admin_password.get_secret_value(),
        client_id=gateway.mqtt_client_id,
    )


def service_account_names(settings: Settings) -> frozenset[str]:
    """The broker's service accounts and client ids as configured: no device may be named like one."""
    names = {settings.mqtt.client_id, settings.gateway.mqtt_client_id}
    username = settings.mqtt.parsed_url().username
    if username:
        names.add(username)
    if settings.gateway.mqtt_admin_username:
        names.add(settings.gateway.mqtt_admin_username)
    return frozenset(names)


def open_alert_store(settings: Settings) -> Any:
    from rules.store import AlertStore

    open_registry(settings)  # the alert tables live in the registry database and migrate with it
    return AlertStore(settings.registry.url)


async def ensure_collector_account(settings: Settings, registry: RegistryStore) -> None:
    """With broker provisioning configured, make sure the collectors' own MQTT account exists and may
    subscribe to every device topic (also as `$share/nakhon/...` members) before they connect."""
    provisioner = make_provisioner(settings)
    url = settings.mqtt.parsed_url()
    if provisioner is None or not url.username or url.password is None:
        return
    from gateway.service import DeviceService

    try:
        await DeviceService(registry, provisioner).ensure_collector_account(
            url.username, url.password.get_secret_value(), actor="nakhon run", client_id=settings.mqtt.client_id
        )
        if await provisioner.pin_admin_account():
            log.info("pinned the broker admin account to client id %s", settings.gateway.mqtt_client_id)
    finally:
        await provisioner.close()


def import_devices_csv(settings: Settings, csv_text: str) -> str:
    """Register devices from CSV text (idempotent upsert); returns a one-line summary."""
    from gateway.service import DeviceService

    store = open_registry(settings)
    try:
        report = asyncio.run(DeviceService(store, None).import_csv(csv_text, actor="simulator", atomic=False))
    finally:
        store.close()
    return f"{report.created} created, {report.updated} updated, {len(report.errors)} rejected rows"


def diagnostics_to_registry(store: RegistryStore) -> Callable[[dict[str, list[RecentMessage]]], None]:
    def flush(new: dict[str, list[RecentMessage]]) -> None:
        store.record_recent_messages(
            {
                device_id: [
                    RegistryRecentMessage(m.topic, m.payload, m.accepted, m.reason, m.received_ns) for m in messages
                ]
                for device_id, messages in new.items()
            }
        )

    return flush


@dataclass
class Running:
    """Handles on what `start_services` started, for the demo's live view and for an orderly stop."""

    settings: Settings
    registry: RegistryStore
    directory: DeviceDirectory
    sink: Sink | None = None
    collector: CollectorService | None = None
    rules: Any = None
    gateway_server: Any = None
    metrics: MetricsServer | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


async def start_services(
    settings: Settings,
    component: str = "all",
    *,
    mqtt_protocol: int = 5,
    sink: Sink | None = None,
    gateway_port: int | None = None,
    rules_extras: Any = None,
) -> Running:
    registry = await asyncio.to_thread(open_registry, settings)
    directory = RegistryDirectory(registry)
    running = Running(settings=settings, registry=registry, directory=directory)
    running.closers.append(lambda: asyncio.to_thread(directory.stop))
    checks: dict[str, Callable[[], dict[str, Any]]] = {}

    if component in ("all", "collectors"):
        await ensure_collector_account(settings, registry)
        running.sink = sink or make_sink(settings)
        writer_ref: list[Any] = []

        async def emit_point(point: Point) -> None:
            # Alert points join the ingest writer (batched, spooled while the store is away); the rules
            # engine does not wait for the write.
            await writer_ref[0].add_wait(point)

        rules_runtime = await start_rules(settings, registry, directory, emit_point, rules_extras)
        running.rules = rules_runtime
        collector = build_collector(
            settings,
            directory,
            readings_out=rules_runtime,
            diagnostics_flush=diagnostics_to_registry(registry),
            sink=running.sink,
            mqtt_protocol=mqtt_protocol,
        )
        writer_ref.append(collector.writer)
        running.collector = collector
        await collector.start()
        # Closers run in reverse: stop MQTT intake, then drain the rules engine, then close the writer.
        running.closers.append(collector.close)
        if rules_runtime is not None:
            running.closers.append(rules_runtime.close)
        running.closers.append(collector.stop_intake)
        checks.update(collector.health_checks())
        if rules_runtime is not None:
            checks.update(rules_runtime.health_checks())

    if component in ("all", "gateway"):
        running.gateway_server = await start_gateway(settings, registry, running, port=gateway_port)

    if settings.metrics.port or component != "gateway":
        running.metrics = MetricsServer(settings.metrics.host, settings.metrics.port, checks)
        await running.metrics.start()
        running.closers.append(running.metrics.close)
    return running


async def stop_services(running: Running) -> None:
    # Reverse order of start: the gateway and metrics stop last so health stays visible while flushing.
    for close in reversed(running.closers):
        try:
            await close()
        except Exception:
            log.exception("error while stopping %s", close)
    for task in running.tasks:
        task.cancel()
    await asyncio.to_thread(running.registry.close)


def tune_garbage_collector() -> None:
    """Fewer, later young-generation collections: the ingest path allocates a few small objects per message
    and almost none of them form cycles (measured with `nakhon bench`: about 10 % less CPU per message).
    What start-up loaded (modules, tables, rules) is frozen out of every later collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


async def run_services(settings: Settings, component: str, stop: asyncio.Event) -> None:
    running = await start_services(settings, component)
    tune_garbage_collector()
    try:
        await stop.wait()
    finally:
        await stop_services(running)


# -- gateway --------------------------------------------------------------------------------------------------


async def check_broker_at_start(registry: RegistryStore, provisioner: Any) -> None:
    """Pin the admin account and report (not repair) every registry/broker difference, as
    `nakhon devices reconcile` would; a broker that is down is a warning, not a reason not to serve."""
    from gateway.errors import ProvisioningError
    from gateway.service import DeviceService

    try:
        if await provisioner.pin_admin_account():
            log.info("pinned the broker admin account to its client id")
        report = await DeviceService(registry, provisioner).reconcile(fix=False, actor="nakhon run gateway")
    except ProvisioningError as exc:
        log.warning("could not compare the registry with the broker at start: %s", exc)
        return
    for difference in report.differences:
        log.warning("registry and broker disagree: %s (run `nakhon devices reconcile --fix`)", difference)


async def start_gateway(settings: Settings, registry: RegistryStore, running: Running, *, port: int | None) -> Any:
    import uvicorn

    from gateway.api.app import create_app

    routers = []
    close_alerts: Callable[[], None] | None = None
    if running.rules is not None and running.rules.router is not None:
        routers.append(running.rules.router)
    else:  # the engine runs in the collectors' process: serve the alerts API from the store it writes
        from nakhon.rules_wiring import build_alerts_api

        router, close_alerts = await asyncio.to_thread(build_alerts_api, settings)
        routers.append(router)
    provisioner = make_provisioner(settings)
    if provisioner is not None:
        await check_broker_at_start(registry, provisioner)
    app = create_app(registry, provisioner, extra_routers=routers, reserved_ids=service_account_names(settings))
    from nakhon.web_wiring import mount_console

    close_console = mount_console(app, settings, registry)
    config = uvicorn.Config(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port if port is None else port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="gateway-http")
    while not server.started:
        if task.done():
            task.result()  # raises the bind error, naming the port
            raise RuntimeError(f"the gateway stopped while starting (port {config.port})")
        await asyncio.sleep(0.02)

    async def close() -> None:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        if provisioner is not None:
            await provisioner.close()
        if close_alerts is not None:
            close_alerts()
        close_console()

    running.closers.append(close)
    return server


# -- rules ----------------------------------------------------------------------------------------------------


class RulesRuntime:
    """The rules engine fed from the collectors' stream through a bounded queue."""

    def __init__(self, engine: Any, queue_size: int, router: Any = None) -> None:
        self.engine = engine
        self.router = router
        self.queue: asyncio.Queue[tuple[Reading, DeviceInfo]] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.engine.run(self.queue), name="rules-engine")

    def offer_nowait(self, reading: Reading, device: DeviceInfo) -> bool:
        try:
            self.queue.put_nowait((reading, device))
        except asyncio.QueueFull:
            return False
        return True

    async def offer(self, reading: Reading, device: DeviceInfo) -> None:
        # Awaiting a full queue is the explicit backpressure: ingestion slows to the rules engine's pace.
        await self.queue.put((reading, device))

    def health_checks(self) -> dict[str, Callable[[], dict[str, Any]]]:
        checks = getattr(self.engine, "health_checks", None)
        return checks() if callable(checks) else {}

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.queue.join(), 10)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        close = getattr(self.engine, "close", None)
        if close is not None:
            await close()


async def start_rules(
    settings: Settings,
    registry: RegistryStore,
    directory: DeviceDirectory,
    emit_point: Callable[[Point], Awaitable[None]],
    extras: Any = None,
) -> RulesRuntime | None:
    """Build and start the rules engine, or None while the rules component is unavailable.
    `extras`: a `nakhon.rules_wiring.RulesExtras` (clock, notifiers, city names) — the demo's simulated time."""
    try:
        from nakhon.rules_wiring import build_rules_runtime
    except ImportError:
        return None
    runtime: RulesRuntime | None = await build_rules_runtime(
        settings, registry, directory, emit_point, RulesRuntime, extras
    )
    if runtime is not None:
        await runtime.start()
    return runtime
