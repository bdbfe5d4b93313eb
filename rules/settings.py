"""Settings and one factory for the app shell:

service = build_rules_service(RulesSettings(...), emit_point=sink_callback, devices=directory.all)
app = create_app(..., extra_routers=[service.router(require_role)])
await service.start(); asyncio.create_task(service.engine.run(service.queue))
offer(service.queue, reading, device)     # rules.engine.offer: never blocks, drops (counted) when full
await service.queue.put((reading, device))  # or backpressure, as `nakhon run` does (nakhon/rules_wiring.py)

Acknowledge links in messages are signed (rules/acklink.py) with `ack_link_secret`, else the secret kept in
`ack_link_secret_file` (made once, mode 0600), else a secret that lives only as long as the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, SecretStr

from core.model import DeviceInfo, Reading
from rules.acklink import DEFAULT_TTL_S, AckLinkSigner, resolve_secret
from rules.api import build_router
from rules.check import load_rules_dir
from rules.engine import DevicesProvider, RulesEngine
from rules.lifecycle import EmitPoint
from rules.model import RuleSet
from rules.notify.base import Notifier
from rules.notify.pipeline import NotificationPipeline, RetryPolicy, build_notifiers
from rules.notify.render import Renderer
from rules.notify.routing import DEFAULT_ROUTING_FILE, RoutingConfig, load_routing
from rules.store import AlertStore
from rules.timeutil import Clock, SystemClock


class RulesSettings(BaseModel):
    database_url: str = "sqlite:///nakhon-alerts.db"  # or postgresql+psycopg://user:pass@host/db
    rules_dir: Path | None = None  # None: the shipped rules/defaults/
    routing_file: Path | None = None  # None: rules/notify/default_routing.yaml (log only)
    public_url: str = "http://localhost:8000"  # for acknowledge links in messages
    queue_size: int = Field(10_000, ge=1)  # readings waiting for the engine
    receiver_queue_size: int = Field(100, ge=1)  # messages waiting per receiver
    tick_interval_s: float = Field(5.0, gt=0)
    retry_max_attempts: int = Field(0, ge=0)  # 0: retry while the message still matters
    retry_initial_backoff_s: float = Field(2.0, ge=0)
    retry_max_backoff_s: float = Field(60.0, ge=0)  # the longest wait between two attempts (per receiver: `retry.max`)
    notify_timeout_s: float = Field(30.0, gt=0)
    notify_shutdown_grace_s: float = Field(5.0, ge=0)  # at stop, wait this long for owed notifications to go
    ack_link_secret: SecretStr | None = None  # signs acknowledge links; None: ack_link_secret_file
    ack_link_secret_file: Path | None = None  # made once when missing; None (and no secret): per-process secret
    ack_link_ttl_s: float = Field(DEFAULT_TTL_S, gt=0)  # how long a link in a message stays valid


@dataclass
class RulesService:
    settings: RulesSettings
    store: AlertStore
    ruleset: RuleSet
    routing: RoutingConfig
    pipeline: NotificationPipeline
    engine: RulesEngine
    queue: asyncio.Queue[tuple[Reading, DeviceInfo]]
    ack_links: AckLinkSigner | None = None

    def router(self, require_role: Any, audit: Any = None) -> APIRouter:
        return build_router(
            self.store, require_role, clock=self.engine.clock, ack_links=self.ack_links, audit=audit
        )

    async def start(self) -> None:
        await self.pipeline.start()
        await self.engine.start()

    async def stop(self) -> None:
        await self.pipeline.stop(grace_s=self.settings.notify_shutdown_grace_s)
        self.store.close()


def build_rules_service(
    settings: RulesSettings,
    emit_point: EmitPoint | None,
    devices: DevicesProvider | None = None,
    *,
    clock: Clock | None = None,
    notifiers: Mapping[str, Notifier] | None = None,
) -> RulesService:
    clock = clock or SystemClock()
    store = AlertStore(settings.database_url)
    ruleset = load_rules_dir(settings.rules_dir)
    routing = load_routing(settings.routing_file or DEFAULT_ROUTING_FILE)
    secret = settings.ack_link_secret.get_secret_value() if settings.ack_link_secret is not None else None
    ack_links = AckLinkSigner(resolve_secret(secret, settings.ack_link_secret_file), settings.ack_link_ttl_s)
    renderer = Renderer(settings.public_url, ack_links=ack_links)
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
    )
    queue: asyncio.Queue[tuple[Reading, DeviceInfo]] = asyncio.Queue(maxsize=settings.queue_size)
    return RulesService(settings, store, ruleset, routing, pipeline, engine, queue, ack_links)
