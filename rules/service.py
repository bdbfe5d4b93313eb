"""The rules component's one owner: what an embedder builds, starts and stops.

    readings = ReadingQueue(maxsize=settings.queue_size)    # made first: the collectors offer to it
    service = build_rules_service(settings, emit_point, devices=directory.all, queue=readings)
    await service.start()          # reload open alerts, start the notification workers (fails fast)
    service.start_consuming()      # the engine's loop on the queue, in a task the service owns
    await readings.offer(reading, device)   # backpressure: waits for room, never drops
    await service.stop()           # drain the queue, let owed notifications go, close the store

The queue is the seam between the stream of readings and the engine, so the readings' producer (the collectors)
and the alert points' consumer (their writer) can be built in order, without a reference set afterwards.
Acknowledge links in messages are signed (rules/acklink.py) with `ack_link_secret`, else the secret kept in
`ack_link_secret_file` (made once, mode 0600), else a secret that lives only as long as the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter

from core.model import DeviceInfo, Reading
from rules.acklink import AckLinkSigner, resolve_secret
from rules.api import build_router
from rules.check import load_rules_dir
from rules.engine import DevicesProvider, RulesEngine
from rules.evidence import CityNames
from rules.lifecycle import EmitPoint
from rules.model import RuleSet
from rules.notify.base import Notifier
from rules.notify.pipeline import NotificationPipeline, RetryPolicy, build_notifiers
from rules.notify.render import Renderer
from rules.notify.routing import DEFAULT_ROUTING_FILE, RoutingConfig, load_routing
from rules.settings import RulesSettings
from rules.store import AlertStore
from rules.timeutil import Clock, SystemClock

log = logging.getLogger(__name__)

DeviceLookup = Callable[[str], DeviceInfo | None]
DRAIN_TIMEOUT_S = 10.0  # at stop, how long queued readings may take to be evaluated


class ReadingQueue(asyncio.Queue[tuple[Reading, DeviceInfo]]):
    """The bounded queue of readings waiting for the engine (the collectors' `ReadingConsumer`).

    It counts what was put and what the engine marked done (`task_done`: after the reading's batch of alert
    state changes is committed and published). The engine finishes readings in queue order, so "the first n
    are evaluated" is one number, and the collectors acknowledge a message to the broker only once its reading
    is within it (`evaluated_through`): a crash loses no evaluation of an acknowledged message."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._offered = 0
        self._evaluated = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (seq, tie, future)
        self._tie = 0

    @property
    def offered(self) -> int:
        return self._offered

    def put_nowait(self, item: tuple[Reading, DeviceInfo]) -> None:
        super().put_nowait(item)  # `put` ends here too
        self._offered += 1

    def task_done(self) -> None:
        super().task_done()
        self._evaluated += 1
        waiting = self._waiting
        while waiting and waiting[0][0] <= self._evaluated:
            future = heapq.heappop(waiting)[2]
            if not future.done():
                future.set_result(None)

    def evaluated_through(self, seq: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seq <= self._evaluated:
            future.set_result(None)
        else:
            self._tie += 1
            heapq.heappush(self._waiting, (seq, self._tie, future))
        return future

    def offer_nowait(self, reading: Reading, device: DeviceInfo) -> bool:
        try:
            self.put_nowait((reading, device))
        except asyncio.QueueFull:
            return False
        return True

    async def offer(self, reading: Reading, device: DeviceInfo) -> None:
        # Awaiting a full queue is the explicit backpressure: ingestion slows to the rules engine's pace.
        await self.put((reading, device))


class RulesService:
    """The alert store, rules, routing, notification pipeline and engine, and the task that feeds the engine
    from the queue; the only object an embedder holds."""

    def __init__(
        self,
        settings: RulesSettings,
        store: AlertStore,
        ruleset: RuleSet,
        routing: RoutingConfig,
        pipeline: NotificationPipeline,
        engine: RulesEngine,
        queue: ReadingQueue,
        ack_links: AckLinkSigner | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ruleset = ruleset
        self.routing = routing
        self.pipeline = pipeline
        self.engine = engine
        self.queue = queue
        self.ack_links = ack_links
        self._consuming: asyncio.Task[None] | None = None
        self._stopped = False

    def router(self, require_role: Any, audit: Any = None) -> APIRouter:
        """The alerts API (`/alerts`, `/silences`, `/notifications`) on this service's store."""
        return build_router(self.store, require_role, clock=self.engine.clock, ack_links=self.ack_links, audit=audit)

    def health_checks(self) -> dict[str, Callable[[], dict[str, Any]]]:
        """`/healthz` detail: which receivers are failing, since when, the last error (never unhealthy by itself)."""
        return {"notifications": self.pipeline.health}

    async def start(self) -> None:
        """Start the notification workers and reload open alerts: a broken alert schema fails here, at start.
        A failed start stops what it started."""
        try:
            await self.pipeline.start()
            await self.engine.start()
        except BaseException:
            await self.stop()
            raise

    def start_consuming(self) -> None:
        """Run the engine's loop on the queue (evaluate, tick every `tick_interval_s`) until `stop`."""
        if self._consuming is None:
            self._consuming = asyncio.create_task(self.engine.run(self.queue), name="rules-engine")

    async def stop(self) -> None:
        """Evaluate what is queued (up to DRAIN_TIMEOUT_S), stop the loop, give owed notifications
        `notify_shutdown_grace_s` to go (the rest waits in the outbox), close the store. Once."""
        if self._stopped:
            return
        self._stopped = True
        if self._consuming is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), DRAIN_TIMEOUT_S)
            self._consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._consuming
        await self.pipeline.stop(grace_s=self.settings.notify_shutdown_grace_s)
        self.store.close()


def build_rules_service(
    settings: RulesSettings,
    emit_point: EmitPoint | None,
    devices: DevicesProvider | None = None,
    *,
    clock: Clock | None = None,
    notifiers: Mapping[str, Notifier] | None = None,
    city_names: CityNames | None = None,
    device_lookup: DeviceLookup | None = None,
    queue: ReadingQueue | None = None,
) -> RulesService:
    """Everything in constructor order. `device_lookup`: the current record of a device (its maintenance window)
    for notifications, else the devices as last evaluated; `queue`: made by the embedder when the readings'
    producer is built first, else made here with `queue_size`."""
    clock = clock or SystemClock()
    store = AlertStore(settings.database_url)
    ruleset = load_rules_dir(settings.rules_dir)
    routing = load_routing(settings.routing_file or DEFAULT_ROUTING_FILE)
    secret = settings.ack_link_secret.get_secret_value() if settings.ack_link_secret is not None else None
    ack_links = AckLinkSigner(resolve_secret(secret, settings.ack_link_secret_file), settings.ack_link_ttl_s)
    evaluated: dict[str, DeviceInfo] = {}  # the engine records each device as it evaluates its readings
    renderer = Renderer(settings.public_url, ack_links=ack_links, city_names=city_names, device_lookup=evaluated.get)
    pipeline = NotificationPipeline(
        routing,
        notifiers if notifiers is not None else build_notifiers(routing),
        store,
        clock=clock,
        renderer=renderer,
        retry=RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            initial_backoff_s=settings.retry_initial_backoff_s,
            max_backoff_s=settings.retry_max_backoff_s,
            timeout_s=settings.notify_timeout_s,
        ),
        queue_size=settings.receiver_queue_size,
        device_lookup=device_lookup or evaluated.get,
    )
    engine = RulesEngine(
        ruleset,
        store,
        pipeline,
        emit_point,
        clock=clock,
        devices=devices,
        renderer=renderer,
        tick_interval_s=settings.tick_interval_s,
        known_devices=evaluated,
        show_pending_after_s=settings.show_pending_after_s,
    )
    queue = queue if queue is not None else ReadingQueue(maxsize=settings.queue_size)
    return RulesService(settings, store, ruleset, routing, pipeline, engine, queue, ack_links)


__all__ = ["DRAIN_TIMEOUT_S", "ReadingQueue", "RulesService", "build_rules_service"]
