from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from core.model import DeviceInfo, Point, Reading
from core.time import BANGKOK, NS
from rules.notify.memory import MemoryNotifier
from rules.notify.pipeline import NotificationPipeline, RetryPolicy
from rules.notify.render import Renderer
from rules.notify.routing import parse_routing
from rules.store import RULES_TABLES, AlertStore
from rules.timeutil import FakeClock, ns_from_datetime
from tests.gateway.pg import fresh_database, postgres_server


def bkk(*args: int) -> int:
    """UTC ns of a wall-clock time in Asia/Bangkok."""
    return ns_from_datetime(datetime(*args, tzinfo=BANGKOK))  # type: ignore[misc]


# Tuesday 2026-01-06 10:00 Asia/Bangkok (a working day, TOU on-peak)
T0 = bkk(2026, 1, 6, 10, 0)


def device(device_id: str = "dev-1", feed: str = "air", **kw: Any) -> DeviceInfo:
    kw.setdefault("city", "chiangmai")
    kw.setdefault("district", "mueang")
    kw.setdefault("name", f"Station {device_id}")
    return DeviceInfo(device_id=device_id, feed=feed, **kw)


def reading(dev: DeviceInfo, t_ns: int, tags: dict[str, str] | None = None, **fields: Any) -> Reading:
    return Reading(dev.device_id, dev.feed, dev.city, dev.district, t_ns, fields, dict(tags or {}))


def minutes(n: float) -> int:
    return int(n * 60 * NS)


@pytest.fixture(scope="session")
def rules_pg_server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def rules_pg_url(rules_pg_server: str) -> Iterator[str]:
    """One PostgreSQL database for the rules tests, migrated like production (`RegistryStore.migrate()`)."""
    from gateway.registry.store import RegistryStore

    with fresh_database(rules_pg_server) as url:
        registry = RegistryStore(url)
        registry.migrate()
        registry.close()
        yield url


def _empty_rules_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))  # a leaked transaction fails the test, not hangs
            tables = ", ".join(t.name for t in RULES_TABLES)
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty alert database: a bare SQLite file (tables made by `AlertStore`) or a migrated PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'alerts.db'}"
    url: str = request.getfixturevalue("rules_pg_url")
    _empty_rules_tables(url)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[AlertStore]:
    s = AlertStore(db_url)
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


class PointSink:
    def __init__(self) -> None:
        self.points: list[Point] = []

    async def __call__(self, point: Point) -> None:
        self.points.append(point)

    @property
    def states(self) -> list[tuple[str, str, str]]:
        return [(str(p.tags["rule"]), str(p.tags["device_id"]), str(p.fields["state"])) for p in self.points]


@pytest.fixture
def sink() -> PointSink:
    return PointSink()


SIMPLE_ROUTING = """
receivers:
  - {name: ops}
  - {name: line}
  - {name: boss}
route:
  receiver: ops
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 0s
"""


async def _no_sleep(_s: float) -> None:
    return None


def make_pipeline(
    store: AlertStore,
    clock: FakeClock,
    routing_yaml: str = SIMPLE_ROUTING,
    notifiers: dict[str, Any] | None = None,
    **kw: Any,
) -> tuple[NotificationPipeline, dict[str, MemoryNotifier]]:
    routing = parse_routing(routing_yaml)
    mem = notifiers or {r.name: MemoryNotifier(r.name) for r in routing.receivers}
    kw.setdefault("retry", RetryPolicy(initial_backoff_s=0, timeout_s=5))  # retry while it matters
    kw.setdefault("sleep", _no_sleep)
    kw.setdefault("renderer", Renderer("https://nakhon.example.go.th"))
    pipeline = NotificationPipeline(routing, mem, store, clock=clock, **kw)
    return pipeline, mem


@pytest.fixture
def pipeline_factory(store: AlertStore, clock: FakeClock) -> Callable[..., Any]:
    def factory(routing_yaml: str = SIMPLE_ROUTING, **kw: Any) -> tuple[NotificationPipeline, dict[str, Any]]:
        return make_pipeline(store, clock, routing_yaml, **kw)

    return factory
