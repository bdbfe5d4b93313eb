"""`nakhon simulate`: publish the simulated city to the broker.

The app shell mounts `simulate` as a command (`app.command("simulate")(simulate)`). Contract with the shell,
through `ctx.obj` (a dict):

- the broker URL when `--url` is omitted: `ctx.obj["mqtt_url"]` if present, else `ctx.obj["settings"]().mqtt.url`
  (the app shell's config), else `$NAKHON_MQTT_URL`;
- `ctx.obj["register_devices"](csv_text) -> str`: called with the registry CSV when `--register` is given;
  its summary is printed.

Standalone: `python -m nakhon.sim --url mqtt://user:pass@127.0.0.1:1883 --speed 60 --duration 120`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from nakhon.sim.city import City
from nakhon.sim.publisher import PublishStats, publish_city, redact_url

console = Console(stderr=True)


def _from_ctx(ctx: typer.Context | None, key: str) -> Any:
    obj = ctx.obj if ctx is not None else None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _configured_url(ctx: typer.Context | None) -> str | None:
    url = _from_ctx(ctx, "mqtt_url")
    if url:
        return str(url)
    settings = _from_ctx(ctx, "settings")
    if callable(settings):
        settings = settings()
    mqtt = getattr(settings, "mqtt", None)
    return getattr(mqtt, "url", None) or os.environ.get("NAKHON_MQTT_URL")


def simulate(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="MQTT URL mqtt://user:pass@host:port (default: from config)")] = None,
    devices: Annotated[int, typer.Option(help="Number of devices, spread over air/flood/energy/bus")] = 200,
    rate: Annotated[float, typer.Option(help="Messages per second in total (0 = as fast as the broker acks)")] = 50,
    duration: Annotated[float, typer.Option(help="Seconds to run (0 = until Ctrl-C)")] = 60,
    qos: Annotated[int, typer.Option(help="MQTT QoS (1: count PUBACKs)")] = 1,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second (60: an hour a minute)")] = 1.0,
    register: Annotated[bool, typer.Option(help="Register the devices in the registry first")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the simulated city")] = 1,
    malformed: Annotated[float, typer.Option(help="Fraction of malformed messages (quarantine demo)")] = 0.01,
    processes: Annotated[int, typer.Option(help="Publisher processes")] = 1,
    count: Annotated[int | None, typer.Option(help="Stop after this many messages")] = None,
    incidents: Annotated[bool, typer.Option(help="Schedule incidents over the run")] = True,
) -> None:
    """Simulate Laem Chabang (แหลมฉบัง): ~200 sensors, daily patterns, incidents, published over MQTT."""
    mqtt_url = url or _configured_url(ctx)
    if not mqtt_url:
        console.print("[red]no MQTT URL: pass --url or configure the broker[/red]")
        raise typer.Exit(2)
    city = City(seed=seed)
    fleet = city.devices(devices)
    if register:
        register_devices: Callable[[str], str] | None = _from_ctx(ctx, "register_devices")
        if register_devices is None:
            console.print("[red]--register needs the registry (run it through `nakhon simulate`)[/red]")
            raise typer.Exit(2)
        console.print(register_devices(city.registry_csv(fleet)))
    console.print(
        f"simulating {len(fleet)} devices of {city.name} ({city.slug}) → {redact_url(mqtt_url)} "
        f"at {rate:g} msg/s, QoS {qos}, speed ×{speed:g}"
    )
    stats = asyncio.run(
        _run(
            mqtt_url,
            fleet=fleet,
            rate=rate,
            duration=duration or None,
            count=count,
            qos=qos,
            speed=speed,
            seed=seed,
            malformed=malformed,
            processes=processes,
            incidents=incidents,
        )
    )
    console.print(f"[bold]done[/bold]: {stats.summary()}")
    typer.echo(
        f"published={stats.published} acknowledged={stats.acknowledged} failed={stats.failed} "
        f"malformed={stats.malformed} seconds={stats.seconds:.2f} rate={stats.rate:.1f}"
    )
    if stats.failed:
        raise typer.Exit(1)


async def _run(
    url: str,
    *,
    fleet: list[Any],
    rate: float,
    duration: float | None,
    count: int | None,
    qos: int,
    speed: float,
    seed: int,
    malformed: float,
    processes: int,
    incidents: bool,
) -> PublishStats:
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / Windows
        loop.add_signal_handler(signal.SIGINT, stop.set)  # Ctrl-C: stop publishing, drain, print the summary

    def progress(stats: PublishStats) -> None:
        console.print(f"  … published {stats.published}, acknowledged {stats.acknowledged}, failed {stats.failed}")

    return await publish_city(
        url,
        devices=fleet,
        rate=rate,
        duration_s=duration,
        count=count,
        qos=qos,
        client_id=f"nakhon-sim-{os.getpid()}",
        on_progress=progress,
        processes=processes,
        seed=seed,
        speed=speed,
        malformed_rate=malformed,
        incidents=incidents,
        progress_interval_s=5.0,
        stop_event=stop,
    )


app = typer.Typer(add_completion=False, help="The nakhon city simulator")
app.command("simulate")(simulate)


def main() -> None:  # pragma: no cover - entry point
    typer.run(simulate)


__all__ = ["app", "main", "simulate"]
