"""The rules engine inside `nakhon run`: built from nakhon's settings, on the registry's database and devices.

The composition root (`nakhon/app.py`) calls `build_rules(...)`, then `service.start()` and, once the collectors
run, `service.start_consuming()`:

- alerts, silences and the notification log live in the registry database (`settings.registry.url`), in tables
  made by the registry's migrations (`0002_rules`, run by `open_registry()` before this is called);
- rules come from `settings.rules.dir` (else the shipped `rules/defaults/`), routing from
  `settings.rules.routes_file` (else the shipped log-only routing); acknowledge links use
  `settings.gateway.public_url` and are signed with `settings.rules.ack_link_secret`, else with the secret kept
  in `{data_dir}/ack-link.secret` (made once, mode 0600), valid `settings.rules.ack_link_ttl_s`;
- heartbeat checks list the registry's active devices from the in-memory `RegistryDirectory` (no query per tick);
  notifications see maintenance windows through the same directory, so a window set in the API applies at once;
- the HTTP API (`/api/v1/alerts`, `/silences`, `/notifications`) is guarded by the gateway's `require_role`;
- readings reach the engine through the bounded `ReadingQueue` the collectors are built with; `offer` *awaits*
  room in a full queue (explicit backpressure: ingestion slows to the engine's pace, nothing is dropped, see
  rules/README.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from core.model import DeviceInfo, Point
from gateway.api.auth import require_role
from gateway.registry.directory import RegistryDirectory
from gateway.registry.store import RegistryStore
from rules.acklink import SECRET_FILE_NAME, AckLinkSigner, resolve_secret
from rules.api import build_router
from rules.notify.base import Notifier
from rules.service import ReadingQueue, RulesService, build_rules_service
from rules.settings import RulesSettings
from rules.store import AlertStore
from rules.timeutil import Clock

log = logging.getLogger(__name__)


def rules_settings(settings: Any) -> RulesSettings:
    """The rules service's settings from nakhon's `Settings` (sections registry, rules, gateway)."""
    return RulesSettings.model_validate(
        {
            "database_url": settings.registry.url,
            "rules_dir": Path(settings.rules.dir) if settings.rules.dir else None,
            "routing_file": Path(settings.rules.routes_file) if settings.rules.routes_file else None,
            "public_url": settings.gateway.public_url,
            "queue_size": settings.rules.queue_size,
            "show_pending_after_s": settings.rules.show_pending_after_s,
            "ack_link_secret": settings.rules.ack_link_secret,
            "ack_link_secret_file": Path(settings.data_dir) / SECRET_FILE_NAME,
            "ack_link_ttl_s": settings.rules.ack_link_ttl_s,
        }
    )


def active_devices_provider(registry: RegistryStore, directory: Any) -> Callable[[], list[DeviceInfo]]:
    """Active devices for the heartbeat checks: from the directory's memory when it can list them."""
    all_devices = getattr(directory, "all", None)
    # A directory that cannot list (e.g. a custom one): ask the registry (one query per engine tick).
    listing: Callable[[], Iterable[DeviceInfo]] = all_devices if callable(all_devices) else registry.view.device_infos

    def devices() -> list[DeviceInfo]:
        return [d for d in listing() if d.status == "active"]

    return devices


class CityNamesCache:
    """The registry's city display names, re-read at most every `ttl_s` (a message is rendered per notification,
    not per reading; a renamed city shows within a minute)."""

    def __init__(self, load: Callable[[], dict[str, tuple[str, str]]], ttl_s: float = 60.0) -> None:
        self._load = load
        self._ttl_s = ttl_s
        self._names: dict[str, tuple[str, str]] = {}
        self._at = float("-inf")

    def __call__(self, slug: str) -> tuple[str, str] | None:
        now = time.monotonic()
        if now - self._at > self._ttl_s:
            try:
                self._names = self._load()
            except Exception:  # a registry hiccup must not stop a message: the slug is shown meanwhile
                log.warning("city names could not be read from the registry", exc_info=True)
            self._at = now
        return self._names.get(slug)


@dataclass
class RulesExtras:
    """What an embedder (the demo) sets beyond the settings: the clock (the demo's simulated time), notifiers by
    receiver name (instead of the routing's URLs), and city display names (slug -> (Thai, English))."""

    clock: Clock | None = None
    notifiers: Mapping[str, Notifier] | None = None
    city_names: Callable[[str], tuple[str, str] | None] | None = None
    tick_interval_s: float | None = None


def build_rules(
    settings: Any,
    registry: RegistryStore,
    directory: RegistryDirectory,
    emit_point: Callable[[Point], Awaitable[None]],
    readings: ReadingQueue,
    extras: RulesExtras | None = None,
) -> RulesService:
    """The rules service for `nakhon run`, not yet started (blocking: loads the rules and routing files, opens the
    alert store). `readings`: the queue the collectors offer to; `emit_point`: where alert points go (the
    collectors' writer). Notifications look devices up in the directory (current maintenance windows, not the
    ones of the last reading); messages name cities as the registry does."""
    config = rules_settings(settings)
    extras = extras or RulesExtras()
    if extras.tick_interval_s is not None:
        config = config.model_copy(update={"tick_interval_s": extras.tick_interval_s})
    service = build_rules_service(
        config,
        emit_point,
        active_devices_provider(registry, directory),
        clock=extras.clock,
        notifiers=extras.notifiers,
        city_names=extras.city_names or CityNamesCache(registry.cities.all),
        device_lookup=directory.by_id,
        queue=readings,
    )
    log.info(
        "rules: %d rules from %s, routing %s, alerts in the registry database",
        len(service.ruleset.rules),
        config.rules_dir or "the shipped defaults",
        config.routing_file or "log only (shipped default)",
    )
    return service


def alerts_router(service: RulesService, registry: RegistryStore) -> APIRouter:
    """The engine's alerts API, guarded by the gateway's roles; acks and silences audited beside device changes."""
    return service.router(require_role, audit=registry.audit.record)


def build_alerts_api(settings: Any, registry: RegistryStore, store: AlertStore) -> APIRouter:
    """The alerts API (list, acknowledge, silences, signed acknowledge links) for a process that serves the
    gateway without running the rules engine: it works on `store`, the alert store the engine writes; acks and
    silences are audited in `registry` beside device changes."""
    config = rules_settings(settings)
    secret = config.ack_link_secret.get_secret_value() if config.ack_link_secret is not None else None
    signer = AckLinkSigner(resolve_secret(secret, config.ack_link_secret_file), config.ack_link_ttl_s)
    return build_router(store, require_role, ack_links=signer, audit=registry.audit.record)


__all__ = [
    "CityNamesCache",
    "RulesExtras",
    "active_devices_provider",
    "alerts_router",
    "build_alerts_api",
    "build_rules",
    "rules_settings",
]
