"""The `nakhon` command: one entry point for the demo, the services, field work and the benchmark."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from core.time import BANGKOK
from nakhon.config import ConfigError, Settings, load_settings

app = typer.Typer(
    name="nakhon",
    help="nakhon (นคร): telemetry ingestion and monitoring for Thai municipalities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Messages that were rejected, with the reason.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(quarantine_app, name="quarantine")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (default ./nakhon.toml when present).")
]


class Context:
    """What every command may need, built lazily so `--help` never touches a database."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_path)
            except ConfigError as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(2) from None
        return self._settings

    def registry(self) -> Any:
        from nakhon.registry_wiring import open_registry

        return open_registry(self.settings)

    def provisioner(self) -> Any:
        from nakhon.registry_wiring import make_provisioner

        return make_provisioner(self.settings)

    def alerts_store(self) -> Any:
        from nakhon.registry_wiring import open_alert_store

        return open_alert_store(self.settings)

    def register_devices(self, csv_text: str) -> str:
        from nakhon.registry_wiring import import_devices_csv

        return import_devices_csv(self.settings, csv_text)

    def as_obj(self) -> dict[str, Any]:
        return {
            "context": self,
            "settings": lambda: self.settings,
            "registry": self.registry,
            "provisioner": self.provisioner,
            "alerts_store": self.alerts_store,
            "register_devices": self.register_devices,
            "reserved_ids": self.reserved_ids,
        }

    def reserved_ids(self) -> frozenset[str]:
        from nakhon.registry_wiring import service_account_names

        try:
            return service_account_names(self.settings)
        except typer.Exit:  # a bad config is reported by the command that needs it
            return frozenset()


@app.callback()
def main_callback(
    ctx: typer.Context,
    config: ConfigOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Context(config).as_obj()


def context_of(ctx: typer.Context) -> Context:
    root = ctx.find_root()
    obj = root.obj or {}
    context = obj.get("context")
    if not isinstance(context, Context):  # invoked without the callback (tests): defaults
        context = Context(None)
        root.obj = context.as_obj()
    return context


# -- config ---------------------------------------------------------------------------------------------------


@config_app.command("check")
def config_check(ctx: typer.Context) -> None:
    """Validate the configuration and print the effective values (secrets masked)."""
    settings = context_of(ctx).settings
    typer.echo(json.dumps(settings.masked(), indent=2, ensure_ascii=False, default=str))


# -- quarantine -----------------------------------------------------------------------------------------------


@quarantine_app.command("list")
def quarantine_list(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option("--device", help="Only this device id.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason, e.g. invalid_field.")] = None,
    limit: Annotated[int, typer.Option(help="Most recent N.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Show rejected messages, newest first (times in Asia/Bangkok)."""
    from collectors.quarantine import QuarantineStore

    settings = context_of(ctx).settings
    path = settings.data_dir / "collector" / "quarantine.db"
    if not path.exists():
        typer.echo(f"no quarantine yet ({path} does not exist)")
        return
    store = QuarantineStore(path)
    rows = store.list(device_id=device, reason=reason, limit=limit)
    for row in rows:
        when = datetime.fromtimestamp(row.received_ns / 1e9, UTC).astimezone(BANGKOK)
        payload = row.payload.decode("utf-8", errors="replace")
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "id": row.id, "time": when.isoformat(), "topic": row.topic, "device_id": row.device_id,
                        "feed": row.feed, "reason": row.reason, "detail": row.detail, "payload": payload,
                        "payload_size": row.payload_size,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            typer.echo(
                f"{when:%Y-%m-%d %H:%M:%S%z}  {row.reason:<16} {row.device_id or '-':<20} {row.topic}\n"
                f"    {row.detail}\n    {payload[:200]}"
            )
    if not rows:
        typer.echo("no quarantined messages match")
    dropped = store.dropped()
    if dropped and not as_json:
        typer.echo(f"({dropped} older messages were dropped to keep the quarantine within its limits)")


@quarantine_app.command("replay")
def quarantine_replay(
    ctx: typer.Context,
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason, e.g. sink_rejected.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only rows received since: 2026-12-01T08:00 (Asia/Bangkok) or 6h, 3d.")
    ] = None,
) -> None:
    """Resubmit quarantined messages once their cause is fixed (stored, or quarantined again with the reason)."""
    from collectors.quarantine import QuarantineStore
    from gateway.registry.directory import RegistryDirectory
    from nakhon.collector_wiring import make_sink, quarantine_limits
    from nakhon.registry_wiring import open_registry
    from nakhon.replay import replay

    settings = context_of(ctx).settings
    path = settings.data_dir / "collector" / "quarantine.db"
    if not path.exists():
        typer.echo(f"no quarantine yet ({path} does not exist)")
        return
    try:
        since_ns = _since_ns(since) if since else None
    except ValueError as exc:
        typer.echo(f"--since: {exc}", err=True)
        raise typer.Exit(2) from None
    registry = open_registry(settings)
    directory = RegistryDirectory(registry, start=False)

    async def go() -> Any:
        store = QuarantineStore(path, **quarantine_limits(settings))  # type: ignore[arg-type]
        try:
            return await replay(settings, store, directory, make_sink(settings), reason=reason, since_ns=since_ns)
        finally:
            await store.close()

    try:
        report = asyncio.run(go())
    finally:
        registry.close()
    typer.echo(report.summary())
    for error in report.errors:
        typer.echo(f"  {error}", err=True)
    if report.errors:
        raise typer.Exit(1)


def _since_ns(text: str) -> int:
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return int((datetime.now(UTC).timestamp() - float(text[:-1]) * units[text[-1]]) * 1e9)
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=BANGKOK)
    return int(when.timestamp() * 1e9)


# -- services -------------------------------------------------------------------------------------------------


@app.command("run")
def run(
    ctx: typer.Context,
    component: Annotated[
        str, typer.Argument(help="all | collectors | gateway | rules", show_default=True)
    ] = "all",
) -> None:
    """Run nakhon against the configured broker and stores (the production entry point). SIGTERM flushes."""
    if component not in ("all", "collectors", "gateway", "rules"):
        typer.echo(f"unknown component {component!r}: use all, collectors, gateway or rules", err=True)
        raise typer.Exit(2)
    try:
        from nakhon.app import run_app
    except ImportError as exc:
        _exit_missing(exc)
    settings = context_of(ctx).settings
    asyncio.run(_until_signalled(lambda stop: run_app(settings, component, stop)))


def _exit_missing(exc: ImportError) -> NoReturn:
    """A component that cannot be imported stops the command, naming the module (exit status 3)."""
    from nakhon.errors import MissingDependencyError

    typer.echo(str(MissingDependencyError.from_import_error(exc)), err=True)
    raise typer.Exit(3) from None


async def _until_signalled(main: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await main(stop)


@app.command("demo")
def demo(
    ctx: typer.Context,
    duration: Annotated[float | None, typer.Option(help="Exit after this many seconds with a summary.")] = None,
    devices: Annotated[int, typer.Option(help="Simulated devices.")] = 200,
    rate: Annotated[float, typer.Option(help="Messages per second from the simulated city.")] = 100.0,
    speed: Annotated[float, typer.Option(help="Simulated time runs this many times faster.")] = 60.0,
    live: Annotated[bool | None, typer.Option(help="Live terminal view (default: when a terminal).")] = None,
) -> None:
    """Zero-setup demo: embedded broker, SQLite store, collectors, rules, gateway and a simulated Laem Chabang."""
    try:
        from nakhon.demo import run_demo
    except ImportError as exc:
        _exit_missing(exc)

    settings = context_of(ctx).settings
    show_live = sys.stdout.isatty() if live is None else live
    asyncio.run(
        _until_signalled(
            lambda stop: run_demo(settings, stop, duration=duration, devices=devices, rate=rate, speed=speed,
                                  live=show_live)
        )
    )


def _mount_components() -> None:
    """Mount the component CLIs (each lives with its component) and, by entry point, the commands of the
    packages above the app shell (the benchmarks), which nakhon never imports."""
    from collectors.mapping.cli import profiles_app
    from gateway.cli import devices_app, tokens_app
    from gateway.web.cli import users_app
    from nakhon.sim.cli import simulate
    from rules.cli import alerts_app, rules_app

    app.add_typer(devices_app, name="devices", help="Register and manage devices (field work).")
    app.add_typer(tokens_app, name="tokens", help="API tokens and roles.")
    app.add_typer(users_app, name="users", help="Staff accounts of the web console.")
    app.add_typer(alerts_app, name="alerts", help="Alerts: list, acknowledge, silence.")
    app.add_typer(rules_app, name="rules", help="Rules: check and test.")
    app.add_typer(profiles_app, name="profiles", help="Device profiles: list, show, check.")
    app.command("simulate", help="Publish the simulated city to a broker.")(simulate)
    for entry in entry_points(group="nakhon.commands"):
        entry.load()(app)


try:
    _mount_components()
except ImportError as exc:  # a missing module names itself; it never silently removes the commands needing it
    from nakhon.errors import MissingDependencyError

    print(MissingDependencyError.from_import_error(exc), file=sys.stderr)
    raise SystemExit(3) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
