"""The composition root: `nakhon run` and `nakhon demo` built from Settings, in constructor order.

The only module that knows every component. Each part is built once, with its collaborators in the constructor,
and nothing is set on a part after it is built:

    registry ─▶ directory ─▶ sink ─▶ readings queue ─▶ collector(readings_out=queue, sink)
                                                     └▶ rules(queue, emit_point=collector.writer) ─▶ gateway(rules)
                                                                                                  ─▶ metrics(checks)

The readings queue is the seam between the collectors and the rules engine: built first, it lets the collector
be built before the engine whose alert points go to the collector's writer. How one component is built from
the settings lives beside this module (`collector_wiring`, `registry_wiring`, `rules_wiring`, `gateway_wiring`);
the order lives here. Every module is imported at the top, so a missing dependency stops `nakhon run` before
anything starts (`nakhon.errors.MissingDependencyError`, raised by the CLI), instead of running without alerting.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from collectors.health import MetricsServer
from collectors.service import CollectorService
from collectors.sinks.base import Sink
from collectors.sinks.writer import BatchWriter
from collectors.transport.mqtt import MQTTv50
from core.model import Point
from gateway.registry.directory import RegistryDirectory
from gateway.registry.store import RegistryStore
from nakhon.collector_wiring import build_collector, make_sink
from nakhon.config import Settings
from nakhon.gateway_wiring import GatewayServer, start_gateway
from nakhon.registry_wiring import ensure_collector_account, open_registry
from nakhon.rules_wiring import RulesExtras, build_rules
from rules.service import ReadingQueue, RulesService

log = logging.getLogger(__name__)

COMPONENTS = ("all", "collectors", "gateway", "rules")


@dataclass(frozen=True)
class App:
    """What `start_app` built and started (None: not part of this component), for the demo's live view and for
    an orderly stop."""

    settings: Settings
    registry: RegistryStore
    directory: RegistryDirectory
    sink: Sink | None
    collector: CollectorService | None
    rules: RulesService | None
    gateway: GatewayServer | None
    metrics: MetricsServer | None

    async def stop(self) -> None:
        """Stop so that everything accepted is stored: the HTTP servers first (nothing new through them), then
        MQTT intake (in-flight messages stored and acknowledged), then the rules engine (queued readings evaluated,
        their alert points written, owed notifications given their grace), then the collector's writer (what is
        pending, the alert points included, reaches the sink or the spool), then the registry."""
        steps: list[tuple[str, Callable[[], Awaitable[None]] | None]] = [
            ("metrics", self.metrics.close if self.metrics else None),
            ("gateway", self.gateway.close if self.gateway else None),
            ("MQTT intake", self.collector.stop_intake if self.collector else None),
            ("rules engine", self.rules.stop if self.rules else None),
            ("collector", self.collector.close if self.collector else None),
            ("device directory", lambda: asyncio.to_thread(self.directory.stop)),
            ("registry", lambda: asyncio.to_thread(self.registry.close)),
        ]
        for name, step in steps:
            if step is None:
                continue
            try:
                await step()
            except Exception:
                log.exception("error while stopping the %s", name)


async def start_app(
    settings: Settings,
    component: str = "all",
    *,
    mqtt_protocol: int = MQTTv50,
    sink: Sink | None = None,
    gateway_port: int | None = None,
    rules_extras: RulesExtras | None = None,
) -> App:
    """Build and start `component` (one of COMPONENTS). `sink`, `gateway_port`, `rules_extras`: what tests and the
    demo set beyond the settings (a store to inspect, a free port, the demo's clock and inbox)."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}: use {', '.join(COMPONENTS)}")
    collector: CollectorService | None = None
    rules: RulesService | None = None
    gateway: GatewayServer | None = None
    metrics: MetricsServer | None = None
    async with contextlib.AsyncExitStack() as undo:  # a failed start stops what had started, newest first
        registry = await asyncio.to_thread(open_registry, settings)
        undo.push_async_callback(asyncio.to_thread, registry.close)
        directory = RegistryDirectory(registry)
        undo.push_async_callback(asyncio.to_thread, directory.stop)

        if component in ("all", "collectors"):
            await ensure_collector_account(settings, registry)
            sink = sink or make_sink(settings)
            undo.push_async_callback(sink.close)
            readings = ReadingQueue(maxsize=settings.rules.queue_size)
            collector = build_collector(
                settings,
                directory,
                readings_out=readings,  # awaits room when full: ingestion slows to the engine's pace
                diagnostics_flush=registry.recent.record,
                sink=sink,
                mqtt_protocol=mqtt_protocol,
            )
            rules = await asyncio.to_thread(
                build_rules, settings, registry, directory, alert_points_to(collector.writer), readings, rules_extras
            )
            # Open alerts reloaded, notification workers started: a broken alert schema stops `nakhon run` here,
            # before the collectors take a message.
            await rules.start()
            undo.push_async_callback(rules.stop)
            await collector.start()
            undo.push_async_callback(_stop_stream, collector, rules)
            rules.start_consuming()

        if component in ("all", "gateway"):
            gateway = await start_gateway(settings, registry, rules, port=gateway_port)
            undo.push_async_callback(gateway.close)

        if settings.metrics.port or component != "gateway":
            checks = {**collector.health_checks(), **rules.health_checks()} if collector and rules else {}
            metrics = MetricsServer(settings.metrics.host, settings.metrics.port, checks)
            await metrics.start()
        undo.pop_all()  # started: from now on `App.stop` stops it, in flush order
    return App(settings, registry, directory, sink, collector, rules, gateway, metrics)


def alert_points_to(writer: BatchWriter) -> Callable[[Point], Awaitable[None]]:
    """Alert points join the ingest writer (batched, spooled while the store is away): the engine waits for room
    in the writer, not for the write."""

    async def emit(point: Point) -> None:
        await writer.add_wait(point)

    return emit


async def _stop_stream(collector: CollectorService, rules: RulesService) -> None:
    """Stop the stream in flush order: intake, then the engine (its alert points go to the writer), then the writer."""
    await collector.stop_intake()
    await rules.stop()
    await collector.close()


# glibc `mallopt` parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 1024
ARENA_MAX = 2


def tune_memory_allocator() -> dict[str, bool]:
    """Keep the C allocator from holding freed memory (glibc only; elsewhere nothing is changed). A storm's big
    short-lived buffers (line-protocol bodies of alert points with their messages, megabytes each, encoded in
    worker threads) otherwise land in a per-thread arena once glibc's mmap threshold has risen, and stay in the
    process's RSS after they are freed. A fixed threshold (buffers above it are mapped and unmapped) and two arenas:
    `nakhon bench --scenario flapping`, 100,000 readings, peak RSS of the storm 212–225 → 201 MB, same speed.
    Called before any thread starts. Returns which settings glibc took."""
    import ctypes
    import ctypes.util

    applied = {"mmap_threshold": False, "arena_max": False}
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return applied  # not glibc (musl, macOS): their allocators do not have these knobs
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied["mmap_threshold"] = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    applied["arena_max"] = mallopt(_M_ARENA_MAX, ARENA_MAX) == 1
    return applied


def tune_garbage_collector() -> None:
    """Fewer, later young-generation collections: the ingest path allocates a few small objects per message
    and almost none of them form cycles (measured with `nakhon bench`: about 10 % less CPU per message).
    What start-up loaded (modules, tables, rules) is frozen out of every later collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


async def run_app(settings: Settings, component: str, stop: asyncio.Event) -> None:
    """`nakhon run`: start, serve until `stop` is set (SIGTERM), then stop flushing everything accepted."""
    tune_memory_allocator()
    app = await start_app(settings, component)
    tune_garbage_collector()
    try:
        await stop.wait()
    finally:
        await app.stop()


__all__ = ["COMPONENTS", "App", "alert_points_to", "run_app", "start_app", "tune_garbage_collector",
           "tune_memory_allocator"]
