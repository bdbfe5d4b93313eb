"""`nakhon bench` and `nakhon bench-notify`, mounted on the `nakhon` CLI through the `nakhon.commands` entry point.

The app shell does not import `bench` (bench sits above it): it loads the commands it finds under that entry point
group. The options need nothing but typer; a command imports its benchmark when it starts. The benchmarks need the
`bench` extra on top of the runtime: without it a command exits with a message naming what to install, before it
starts anything.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any

import typer

# Imported by the benchmarks, declared in pyproject's `bench` extra (module name: distribution name).
BENCH_EXTRA = {"psutil": "psutil"}

BENCH_HELP = "Benchmark the ingest path against real Mosquitto and InfluxDB."
BENCH_NOTIFY_HELP = "Benchmark publish → notification latency under background load."


def missing_dependencies() -> list[str]:
    """Distributions of the `bench` extra that are not installed."""
    return [dist for module, dist in BENCH_EXTRA.items() if importlib.util.find_spec(module) is None]


def require_extra(command: str) -> None:
    """Exit 2 with what to install when the `bench` extra is missing."""
    missing = missing_dependencies()
    if missing:
        typer.echo(
            f"nakhon {command} needs the bench extra, missing: {', '.join(missing)}. "
            f"Install it with: pip install 'nakhon[bench]' (or: bash scripts/setup.sh --test)",
            err=True,
        )
        raise typer.Exit(2)


def bench(
    messages: Annotated[int, typer.Option(help="QoS messages to publish (and to the raw broker run).")] = 200_000,
    devices: Annotated[int, typer.Option(help="Simulated devices publishing.")] = 200,
    publishers: Annotated[int, typer.Option(help="Publisher processes.")] = 2,
    qos: Annotated[int, typer.Option(help="MQTT QoS of the load (1: count PUBACKs).")] = 1,
    json_out: Annotated[Path | None, typer.Option(help="Also write the JSON result to this file.")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the temp dir (server logs, collector log).")] = False,
    probe_rate: Annotated[float, typer.Option(help="Latency probe messages per second.")] = 20.0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for InfluxDB to hold everything.")] = 600.0,
    profile_collector: Annotated[
        Path | None, typer.Option(help="Run the collector under cProfile, writing stats here (slows it).")
    ] = None,
    scenario: Annotated[str, typer.Option(
        help="live (publish while the collector runs, the default), or an alert storm drained from a backlog "
             "beside a calm one: haze, flapping, flood, storm (all three); control: a second calm backlog in "
             "place of the storm (the machine's own noise). --messages: backlog per phase."
    )] = "live",
    repeat: Annotated[int, typer.Option(
        min=1, help="Storm scenarios: independent runs (fresh servers each); the JSON adds a per-scenario "
                    "summary (median, min, max of storm_to_calm).")] = 1,
    stations: Annotated[int, typer.Option(help="Storm scenarios: devices per backlog.")] = 1000,
    pace: Annotated[float, typer.Option(help="Storm scenarios: msg/s queueing a backlog (0: unpaced).")] = 6000.0,
    notify_wait: Annotated[float | None, typer.Option(
        help="Storm scenarios: seconds after the storm drain for notification groups to fall due (default: the "
             "longest shipped group_wait of the scenario's feeds + 10 s: air 130, flood and energy 40).")] = None,
    show_pending_after: Annotated[float | None, typer.Option(
        min=0, help="Storm scenarios: the collector's rules.show_pending_after_s (default: its own, 60 s; "
                    "0: every pending alert stored and shown at once, as before candidates).")] = None,
    quiet_hours: Annotated[bool, typer.Option(
        help="Storm scenarios: keep the shipped routing's quiet hours (22:00-07:00 Asia/Bangkok hold all but "
             "critical messages); --no-quiet-hours counts the grouped messages of a run at night.")] = True,
) -> None:
    """Benchmark the ingest path against real Mosquitto and InfluxDB on this machine; prints JSON."""
    require_extra("bench")
    from bench.ingest import _emit, run_bench

    if qos not in (0, 1, 2):
        raise typer.BadParameter("qos must be 0, 1 or 2")
    if repeat > 1 and scenario == "live":
        raise typer.BadParameter(f"--repeat is for the storm scenarios, not --scenario live (got --repeat {repeat})")
    if scenario != "live":
        from bench.storm import CONTROL, SCENARIOS, run_storm_bench, run_storm_repeats

        if scenario not in (*SCENARIOS, "storm", CONTROL):
            raise typer.BadParameter(
                f"scenario must be live, storm, {CONTROL} or one of {', '.join(SCENARIOS)}; got {scenario!r}")
        options: dict[str, Any] = {
            "scenarios": SCENARIOS if scenario == "storm" else (scenario,), "messages": messages,
            "stations": stations, "pace": pace, "notify_wait_s": notify_wait, "timeout_s": timeout, "keep": keep,
            "show_pending_after_s": show_pending_after, "quiet_hours": quiet_hours,
        }
        storm = run_storm_bench(**options) if repeat == 1 else run_storm_repeats(repeat, **options)
        _emit(storm, json_out)
        if storm["lost"] or storm["duplicates"] or not storm["alerts_consistent"]:
            raise typer.Exit(1)
        return
    result = run_bench(messages=messages, devices=devices, publishers=publishers, qos=qos, probe_rate=probe_rate,
                       timeout_s=timeout, keep=keep,
                       profile_out=profile_collector.resolve() if profile_collector else None)
    _emit(result, json_out)
    if result["lost"]:
        raise typer.Exit(1)


def bench_notify(
    probes: Annotated[int, typer.Option(help="Trigger messages (each followed by a clearing one).")] = 100,
    background_rate: Annotated[float, typer.Option(help="Background load, QoS 1 messages per second.")] = 1000,
    devices: Annotated[int, typer.Option(help="Simulated devices publishing the background.")] = 200,
    json_out: Annotated[Path | None, typer.Option(help="Also write the JSON result to this file.")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the temp dir (collector log, registry database).")] = False,
    outage_s: Annotated[
        float, typer.Option(help="Instead: the receiver-outage scenario, webhook answering 500 for this long.")
    ] = 0.0,
    storm_background: Annotated[str, typer.Option(
        help="Background = an alert storm instead of the city: haze, flapping or flood (nakhon bench scenarios)."
    )] = "",
) -> None:
    """Benchmark publish → notification latency of an immediate rule under background load; prints JSON.

    With `--outage-s 300`: alerts raised during a 5-minute webhook outage, counted after it (all, none twice).
    Exit 0 whether or not the latency target is met (it is a benchmark); non-zero only when the harness fails."""
    require_extra("bench-notify")
    from bench.ingest import _emit
    from bench.notify import run_bench_notify, run_bench_notify_outage

    if outage_s > 0:
        _emit(run_bench_notify_outage(outage_s=outage_s, probes=probes, devices=devices, keep=keep), json_out)
        return
    result = run_bench_notify(probes=probes, background_rate=background_rate, devices=devices, keep=keep,
                              storm_background=storm_background)
    _emit(result, json_out)


def register(app: typer.Typer) -> None:
    """Add the benchmark commands to the `nakhon` CLI (entry point `nakhon.commands: bench`)."""
    app.command("bench", help=BENCH_HELP)(bench)
    app.command("bench-notify", help=BENCH_NOTIFY_HELP)(bench_notify)


__all__ = ["BENCH_EXTRA", "bench", "bench_notify", "missing_dependencies", "register", "require_extra"]
