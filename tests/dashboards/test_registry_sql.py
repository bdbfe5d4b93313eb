"""The registry queries (device positions, contracted kW) run against the real registry schema on PostgreSQL.

Device positions and sites live only in the gateway's registry, so the map panels read them through Grafana's
PostgreSQL datasource (`nakhon-registry`) and join them to InfluxDB results by `device_id`. Here: a throwaway
PostgreSQL (tests/gateway/pg.py), the registry migrated with Alembic, the simulated city imported as the
gateway imports a CSV, and every SQL query of the dashboards run with Grafana's variable formatting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from gateway.registry.store import RegistryStore
from gateway.service import DeviceService
from nakhon.sim.city import City
from tests.dashboards.grafana import ALL, Query, expand, load_dashboards, queries
from tests.gateway.pg import fresh_database, postgres_server

BOARDS = load_dashboards()
SQL_QUERIES = [q for q in queries(BOARDS) if q.kind == "sql"]
DEVICES = City(seed=1).devices(20)


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    with postgres_server() as server, fresh_database(server) as url:
        store = RegistryStore(url)
        store.migrate()
        report = asyncio.run(DeviceService(store, None).import_csv(City(seed=1).registry_csv(DEVICES),
                                                                  actor="test", atomic=True))
        assert report.created == len(DEVICES)
        store.close()
        yield url.replace("postgresql+psycopg://", "postgresql://")


def run(url: str, sql: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)  # type: ignore[call-overload]  # Grafana sends the interpolated text as is
        assert cur.description is not None
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_maps_and_contract_panels_use_the_registry() -> None:
    assert {q.dashboard for q in SQL_QUERIES} == {"city-overview", "air-quality", "energy"}


@pytest.mark.parametrize("query", SQL_QUERIES, ids=lambda q: q.id)
@pytest.mark.parametrize("selection", ["all", "picked"])
def test_registry_query_returns_devices(query: Query, selection: str, registry: str) -> None:
    if selection == "all":
        variables: dict[str, object] = {"city": ALL, "district": ALL, "device": ALL}
    else:
        variables = {"city": ["laem-chabang"], "district": sorted({d.district for d in DEVICES}), "device": ALL}
    rows = run(registry, expand(query.text, "sql", variables))
    assert rows, f"no rows for {query.id}"
    assert all(r["device_id"] for r in rows)
    if "lat" in rows[0]:
        expected = {d.device_id for d in DEVICES if f"feed = '{d.feed}'" in query.text or "feed = '" not in query.text}
        assert {r["device_id"] for r in rows} == expected
        assert all(-90 <= r["lat"] <= 90 and -180 <= r["lon"] <= 180 for r in rows)
    if "contracted_kw" in rows[0]:
        want = {d.device_id: d.site["contracted_kw"] for d in DEVICES if d.feed == "energy"}
        assert {r["device_id"]: r["contracted_kw"] for r in rows} == want


def test_a_district_selection_filters(registry: str) -> None:
    [query] = [q for q in SQL_QUERIES if q.dashboard == "air-quality"]
    district = DEVICES[0].district
    rows = run(registry, expand(query.text, "sql", {"city": ALL, "district": [district], "device": ALL}))
    assert {r["device_id"] for r in rows} == {d.device_id for d in DEVICES if d.feed == "air" and
                                               d.district == district}
