"""The gateway's HTTP server built from nakhon's settings: the registry API, the alerts API and the web console
on one port. Called by the composition root (`nakhon/app.py`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.broker.dynsec import MosquittoProvisioner
from gateway.registry.store import RegistryStore
from gateway.web import Console, ConsoleQueries, UserStore, build_console_router
from gateway.web.views import routing_group_of
from nakhon.collector_wiring import mqtt_endpoint
from nakhon.config import Settings
from nakhon.registry_wiring import check_broker_at_start, make_provisioner, service_account_names
from nakhon.rules_wiring import alerts_router, build_alerts_api
from rules.notify.routing import DEFAULT_ROUTING_FILE, Router, load_routing
from rules.service import RulesService
from rules.store import AlertStore

STOP_TIMEOUT_S = 10.0


def mount_console(app: FastAPI, settings: Settings, registry: RegistryStore, alerts: AlertStore) -> None:
    """Add `/console` to the gateway's app, reading `alerts` (the tables the engine writes)."""
    group_of = routing_group_of(Router(load_routing(settings.rules.routes_file or DEFAULT_ROUTING_FILE)))
    console = Console(
        registry=registry,
        users=UserStore(registry),
        devices=app.state.device_service,
        queries=ConsoleQueries(registry.engine, settings.data_dir / "collector" / "quarantine.db"),
        alerts=alerts,
        broker_host=None,  # the example names the host the console was reached on (the broker's port below)
        broker_port=mqtt_endpoint(settings).port,
        group_of=group_of,
    )
    app.include_router(build_console_router(console))


class GatewayServer:
    """The running HTTP server and what it holds open: the broker provisioner, the console's alert store and,
    without a rules engine in this process, the alerts API's own stores."""

    def __init__(
        self,
        server: uvicorn.Server,
        task: asyncio.Task[None],
        provisioner: MosquittoProvisioner | None,
        console_alerts: AlertStore,
        close_alerts_api: Callable[[], None] | None,
    ) -> None:
        self.server = server
        self.port = server.config.port
        self._task = task
        self._provisioner = provisioner
        self._console_alerts = console_alerts
        self._close_alerts_api = close_alerts_api

    async def close(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, STOP_TIMEOUT_S)
        if self._provisioner is not None:
            await self._provisioner.close()
        if self._close_alerts_api is not None:
            self._close_alerts_api()
        self._console_alerts.close()


async def start_gateway(
    settings: Settings, registry: RegistryStore, rules: RulesService | None, *, port: int | None
) -> GatewayServer:
    """Serve the gateway; the alerts API comes from `rules` when the engine runs in this process, else from the
    alert store the engine (in the collectors' process) writes."""
    close_alerts_api: Callable[[], None] | None = None
    if rules is not None:
        router = alerts_router(rules, registry)
    else:
        router, close_alerts_api = await asyncio.to_thread(build_alerts_api, settings)
    provisioner = make_provisioner(settings)
    if provisioner is not None:
        await check_broker_at_start(registry, provisioner)
    app = create_app(registry, provisioner, extra_routers=[router], reserved_ids=service_account_names(settings))
    console_alerts = AlertStore(settings.registry.url)  # migrated with the registry
    mount_console(app, settings, registry, console_alerts)
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
    return GatewayServer(server, task, provisioner, console_alerts, close_alerts_api)


__all__ = ["GatewayServer", "mount_console", "start_gateway"]
