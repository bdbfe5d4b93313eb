"""The web console on the gateway's app (same port): built from nakhon's settings by `start_gateway`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from gateway.registry.store import RegistryStore
from gateway.web import Console, ConsoleQueries, UserStore, build_console_router
from gateway.web.views import GroupOf, default_group_of, routing_group_of
from nakhon.app import mqtt_endpoint
from nakhon.config import Settings


def mount_console(app: FastAPI, settings: Settings, registry: RegistryStore) -> Callable[[], None]:
    """Add `/console` to the gateway's app; returns what closes the console's alert store."""
    alerts: Any = None
    group_of: GroupOf = default_group_of
    try:
        from rules.notify.routing import DEFAULT_ROUTING_FILE, Router, load_routing
        from rules.store import AlertStore

        alerts = AlertStore(settings.registry.url)  # the tables the engine writes (migrated with the registry)
        group_of = routing_group_of(Router(load_routing(settings.rules.routes_file or DEFAULT_ROUTING_FILE)))
    except ImportError:  # pragma: no cover - only while the rules component is missing
        alerts = None
    endpoint = mqtt_endpoint(settings)
    console = Console(
        registry=registry,
        users=UserStore(registry),
        devices=app.state.device_service,
        queries=ConsoleQueries(registry.engine, settings.data_dir / "collector" / "quarantine.db"),
        alerts=alerts,
        broker_host=None,  # the example names the host the console was reached on (the broker's port below)
        broker_port=endpoint.port,
        group_of=group_of,
    )
    app.include_router(build_console_router(console))

    def close() -> None:
        if alerts is not None:
            alerts.close()

    return close


__all__ = ["mount_console"]
