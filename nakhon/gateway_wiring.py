"""The gateway's HTTP server built from nakhon's settings: the registry API, the alerts API and the web console
on one port. Called by the composition root (`nakhon/app.py`)."""

from __future__ import annotations

import asyncio
import contextlib

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


def mount_console(
    app: FastAPI, settings: Settings, registry: RegistryStore, alerts: AlertStore, routing: Router
) -> None:
    """Add `/console` to the gateway's app, reading `alerts` (the tables the engine writes), grouping receivers as
    `routing` does."""
    console = Console(
        registry=registry,
        users=UserStore(registry),
        devices=app.state.device_service,
        queries=ConsoleQueries(registry.engine, settings.data_dir / "collector" / "quarantine.db"),
        alerts=alerts,
        broker_host=None,  # the example names the host the console was reached on (the broker's port below)
        broker_port=mqtt_endpoint(settings).port,
        group_of=routing_group_of(routing),
    )
    app.include_router(build_console_router(console))


class GatewayServer:
    """The running HTTP server and what it holds open: the broker provisioner and, without a rules engine in this
    process, its own alert store."""

    def __init__(
        self,
        server: uvicorn.Server,
        task: asyncio.Task[None],
        provisioner: MosquittoProvisioner | None,
        own_alerts: AlertStore | None,
    ) -> None:
        self.server = server
        self.port = server.config.port
        self._task = task
        self._provisioner = provisioner
        self._own_alerts = own_alerts

    async def close(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, STOP_TIMEOUT_S)
        if self._provisioner is not None:
            await self._provisioner.close()
        if self._own_alerts is not None:
            self._own_alerts.close()


async def start_gateway(
    settings: Settings, registry: RegistryStore, rules: RulesService | None, *, port: int | None
) -> GatewayServer:
    """Serve the gateway. With the engine in this process, the alerts API and the console use its store and
    routing; else (the engine runs with the collectors) they use the alert store the engine writes."""
    own_alerts: AlertStore | None = None
    if rules is not None:
        alerts, routing = rules.store, rules.pipeline.router
        router = alerts_router(rules, registry)
    else:
        own_alerts = alerts = AlertStore(settings.registry.url)  # migrated with the registry
        routing = Router(load_routing(settings.rules.routes_file or DEFAULT_ROUTING_FILE))
        router = build_alerts_api(settings, registry, alerts)
    provisioner = make_provisioner(settings)
    if provisioner is not None:
        await check_broker_at_start(registry, provisioner)
    app = create_app(registry, provisioner, extra_routers=[router], reserved_ids=service_account_names(settings))
    mount_console(app, settings, registry, alerts, routing)
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
    return GatewayServer(server, task, provisioner, own_alerts)


__all__ = ["GatewayServer", "mount_console", "start_gateway"]
