"""The composition root (`nakhon/app.py`): each component built once and wired through its constructor, stopped in
flush order, and a missing dependency stops `nakhon run` instead of leaving it running without alerting."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from collectors.health import MetricsServer
from collectors.service import CollectorService
from collectors.sinks.sqlite import SQLiteSink
from collectors.sinks.writer import BatchWriter
from core.model import DeviceInfo, Reading
from gateway.registry.directory import RegistryDirectory
from gateway.registry.store import RegistryStore
from nakhon.app import App, start_app
from nakhon.config import load_settings
from nakhon.gateway_wiring import GatewayServer
from rules.engine import RulesEngine
from rules.notify.pipeline import NotificationPipeline
from rules.service import RulesService
from rules.store import AlertStore
from tests.servers import MosquittoServer, free_port

BUILT_ONCE = (RegistryStore, RegistryDirectory, CollectorService, BatchWriter, RulesService, AlertStore, RulesEngine,
              NotificationPipeline, GatewayServer, MetricsServer)  # fmt: skip


def _count_constructions(monkeypatch: pytest.MonkeyPatch) -> dict[type, int]:
    """How many times each of BUILT_ONCE is constructed from now on (counted in __init__, so objects that other
    tests left for the garbage collector do not count)."""
    counts = dict.fromkeys(BUILT_ONCE, 0)
    for cls in BUILT_ONCE:
        original = cls.__init__

        def counting(self: Any, *args: Any, _cls: type = cls, _original: Any = original, **kwargs: Any) -> None:
            counts[_cls] += 1
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    return counts


def _settings(tmp_path: Path, broker_url: str, port: int, **extra: Any) -> Any:
    return load_settings(
        data_dir=tmp_path / "data",
        mqtt={"url": broker_url, "client_id": "it-app-collector"},
        gateway={"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
        metrics={"port": 0},
        **extra,
    )


async def test_the_app_builds_each_component_once_wired_through_constructors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MosquittoServer(tmp_path) as broker:
        port = free_port()
        settings = _settings(tmp_path, broker.url, port)
        built = _count_constructions(monkeypatch)
        app = await start_app(settings, "all", gateway_port=port, sink=SQLiteSink(tmp_path / "ts.db"))
        try:
            assert built == dict.fromkeys(BUILT_ONCE, 1)
            assert app.collector is not None and app.rules is not None and app.gateway is not None
            # the one seam between the stream and the engine: the queue the collectors offer to is the engine's
            assert app.collector.pipeline.readings_out is app.rules.queue
            # notifications see the registry's current devices (maintenance windows), given at construction
            assert app.rules.pipeline.device_lookup == app.directory.by_id
            assert app.rules.engine.pipeline is app.rules.pipeline and app.rules.engine.store is app.rules.store
            assert app.metrics is not None and app.gateway.port == port
        finally:
            await app.stop()


async def test_stop_evaluates_queued_readings_and_stores_their_alert_points(tmp_path: Path) -> None:
    """Readings still queued for the engine when the app stops are evaluated, and the alert points they raise are
    in the sink: the engine drains before the writer closes, and the writer flushes before the sink closes."""
    with MosquittoServer(tmp_path) as broker:
        port = free_port()
        # pending alerts shown at once: each queued reading's evaluation leaves a point
        settings = _settings(tmp_path, broker.url, port, rules={"show_pending_after_s": 0})
        app = await start_app(settings, "all", gateway_port=port, sink=SQLiteSink(tmp_path / "ts.db"))
        assert app.rules is not None and app.collector is not None
        # The engine is held until MQTT intake has stopped, so the readings are still queued when stopping begins.
        held = app.rules.engine._lock
        await held.acquire()
        stop_intake = app.collector.stop_intake
        released: list[bool] = []

        async def stop_intake_then_let_the_engine_run() -> None:
            await stop_intake()
            if not released:  # collector.close stops intake again (a no-op)
                released.append(True)
                held.release()

        app.collector.stop_intake = stop_intake_then_let_the_engine_run  # type: ignore[method-assign]
        now = time.time_ns()
        vans = [DeviceInfo(f"van-{i}", "bus", "chiangmai", "mueang", name=f"School van {i}") for i in range(50)]
        for van in vans:  # a child still on board with the ignition off: `bus_child_left` turns pending
            fields: dict[str, float | int | bool | str] = {"ignition": False, "occupancy": 1}
            assert app.rules.queue.offer_nowait(Reading(van.device_id, "bus", "chiangmai", "mueang", now, fields), van)
        await asyncio.sleep(0.2)
        assert await asyncio.to_thread(app.rules.store.open_alerts) == []  # not evaluated yet
        await app.stop()

    stored = SQLiteSink(tmp_path / "ts.db")
    try:
        pending = {p.tags["device_id"] for p in stored.query("alerts", tags={"rule": "bus_child_left"})}
    finally:
        await stored.close()
    assert pending == {van.device_id for van in vans}
    alerts = AlertStore(settings.registry.url)
    try:
        assert {a.device_id for a in alerts.open_alerts()} == pending  # committed before their points were written
    finally:
        alerts.close()


class _Recorder:
    def __init__(self, calls: list[str], name: str) -> None:
        self.calls, self.name = calls, name

    def __getattr__(self, method: str) -> Any:
        async def call() -> None:
            self.calls.append(f"{self.name}.{method}")

        return call


class _SyncRecorder:
    def __init__(self, calls: list[str], name: str) -> None:
        self.calls, self.name = calls, name

    def stop(self) -> None:
        self.calls.append(f"{self.name}.stop")

    def close(self) -> None:
        self.calls.append(f"{self.name}.close")


async def test_stop_order_flushes_intake_then_engine_then_writer() -> None:
    calls: list[str] = []
    app = App(
        settings=None,  # type: ignore[arg-type]
        registry=_SyncRecorder(calls, "registry"),  # type: ignore[arg-type]
        directory=_SyncRecorder(calls, "directory"),  # type: ignore[arg-type]
        sink=None,
        collector=_Recorder(calls, "collector"),  # type: ignore[arg-type]
        rules=_Recorder(calls, "rules"),  # type: ignore[arg-type]
        gateway=_Recorder(calls, "gateway"),  # type: ignore[arg-type]
        metrics=_Recorder(calls, "metrics"),  # type: ignore[arg-type]
    )
    await app.stop()
    assert calls == [
        "metrics.close",
        "gateway.close",
        "collector.stop_intake",  # in-flight messages stored and acknowledged, no new ones
        "rules.stop",  # queued readings evaluated, their alert points handed to the writer
        "collector.close",  # the writer flushes what is pending, the alert points included
        "directory.stop",
        "registry.close",
    ]


def test_a_missing_dependency_stops_nakhon_run_naming_it(tmp_path: Path) -> None:
    """`apprise` (the rules' notifiers) cannot be imported: `nakhon run` exits at once naming it, and starts
    nothing (it used to run on without the rules engine, so without alerting)."""
    data_dir = tmp_path / "data"
    config = tmp_path / "nakhon.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n[mqtt]\nurl = "mqtt://127.0.0.1:{free_port()}"\n'
        f"[metrics]\nport = {free_port()}\n[gateway]\nport = {free_port()}\n",
        encoding="utf-8",
    )
    program = (
        "import sys\n"
        "sys.modules['apprise'] = None  # import apprise -> ModuleNotFoundError\n"
        "from nakhon.cli import main\n"
        f"sys.argv = ['nakhon', '--config', {str(config)!r}, 'run']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    assert "'apprise'" in result.stderr and "Traceback" not in result.stderr
    assert not data_dir.exists()  # nothing was opened, let alone started


def test_a_missing_component_cli_is_named_not_hidden() -> None:
    """The console's CLI module (`gateway.web.cli`) cannot be imported: the `nakhon` CLI stops naming it,
    instead of quietly offering fewer commands (it used to drop `devices`, `tokens` and `users` at debug level)."""
    program = (
        "import sys\n"
        "sys.modules['gateway.web.cli'] = None  # import gateway.web.cli -> ModuleNotFoundError\n"
        "from nakhon.cli import main\n"
        "sys.argv = ['nakhon', '--help']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    assert "'gateway.web.cli'" in result.stderr and "Traceback" not in result.stderr


async def test_a_failed_start_stops_what_had_started(tmp_path: Path) -> None:
    """The metrics port is taken: start_app raises the bind error and leaves nothing running (the collector's
    tasks, the rules engine's loop, the gateway's server are stopped)."""
    with MosquittoServer(tmp_path) as broker:
        taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        metrics_port = taken.sockets[0].getsockname()[1]
        port = free_port()
        settings = load_settings(
            data_dir=tmp_path / "data",
            mqtt={"url": broker.url, "client_id": "it-app-collector"},
            gateway={"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
            metrics={"host": "127.0.0.1", "port": metrics_port},
        )
        tasks_before = asyncio.all_tasks()
        try:
            with pytest.raises(OSError):
                await start_app(settings, "all", sink=SQLiteSink(tmp_path / "ts.db"))
        finally:
            taken.close()
            await taken.wait_closed()
        await asyncio.sleep(0.1)
        left = {t.get_name() for t in asyncio.all_tasks() - tasks_before if not t.done()}
        assert not left & {"rules-engine", "gateway-http", "diagnostics", "enricher-state"}, left
        async with httpx.AsyncClient() as http:  # the gateway no longer answers
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)


def test_the_c_allocator_takes_both_memory_settings_on_glibc_and_none_elsewhere() -> None:
    """`nakhon run` fixes glibc's mmap threshold and arena count (a storm's freed megabyte buffers otherwise stay
    in RSS: measured by `nakhon bench`, see `tune_memory_allocator`); on another C library nothing is changed."""
    import platform

    from nakhon.app import tune_memory_allocator

    applied = tune_memory_allocator()
    on_glibc = platform.libc_ver()[0] == "glibc"
    assert applied == {"mmap_threshold": on_glibc, "arena_max": on_glibc}


async def test_nakhon_run_tunes_the_allocator_before_it_starts_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The arena limit only binds threads made after it: tuning after `start_app` (whose start-up runs registry
    work in worker threads) would leave those threads their own arenas."""
    import nakhon.app as app_module

    order: list[str] = []

    class _Stopped:
        async def stop(self) -> None:
            order.append("stop")

    async def fake_start(settings: Any, component: str) -> Any:
        order.append("start")
        return _Stopped()

    monkeypatch.setattr(app_module, "tune_memory_allocator", lambda: order.append("tune") or {})
    monkeypatch.setattr(app_module, "start_app", fake_start)
    monkeypatch.setattr(app_module, "tune_garbage_collector", lambda: order.append("gc"))
    stop = asyncio.Event()
    stop.set()
    await app_module.run_app(object(), "all", stop)  # type: ignore[arg-type]
    assert order == ["tune", "start", "gc", "stop"]
