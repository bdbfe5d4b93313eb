"""`nakhon bench` and `nakhon bench-notify`, mounted on the `nakhon` CLI through the `nakhon.commands` entry point.

The app shell does not import `bench` (bench sits above it): it loads the commands it finds under that entry point
group. The benchmarks need the `bench` extra on top of the runtime; without it both commands still exist and exit
with a message naming what to install, instead of failing half-way through a run.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import typer

# Imported by the benchmarks, declared in pyproject's `bench` extra (module name: distribution name).
BENCH_EXTRA = {"psutil": "psutil"}

BENCH_HELP = "Benchmark the ingest path against real Mosquitto and InfluxDB."
BENCH_NOTIFY_HELP = "Benchmark publish → notification latency under background load."


def missing_dependencies() -> list[str]:
    """Distributions of the `bench` extra that are not installed."""
    return [dist for module, dist in BENCH_EXTRA.items() if importlib.util.find_spec(module) is None]


def _needs_extra(command: str, missing: list[str]) -> Any:
    def refuse(ctx: typer.Context) -> None:
        typer.echo(
            f"nakhon {command} needs the bench extra, missing: {', '.join(missing)}. "
            f"Install it with: pip install 'nakhon[bench]' (or: bash scripts/setup.sh --test)",
            err=True,
        )
        raise typer.Exit(2)

    return refuse


def register(app: typer.Typer) -> None:
    """Add the benchmark commands to the `nakhon` CLI (entry point `nakhon.commands: bench`)."""
    missing = missing_dependencies()
    if missing:
        # Accept any options, so that `nakhon bench --messages 1000` gets this message and not "no such option".
        settings = {"allow_extra_args": True, "ignore_unknown_options": True}
        app.command("bench", help=BENCH_HELP, context_settings=settings)(_needs_extra("bench", missing))
        app.command("bench-notify", help=BENCH_NOTIFY_HELP, context_settings=settings)(
            _needs_extra("bench-notify", missing)
        )
        return
    from bench.ingest import bench
    from bench.notify import bench_notify

    app.command("bench", help=BENCH_HELP)(bench)
    app.command("bench-notify", help=BENCH_NOTIFY_HELP)(bench_notify)


__all__ = ["BENCH_EXTRA", "missing_dependencies", "register"]
