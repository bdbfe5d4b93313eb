"""Every InfluxQL query of every dashboard runs against a real InfluxDB holding a simulated city, and returns data.

The city: `tests/dashboards/citydata.py` (nakhon.sim readings → feed schemas → domain enrichers → InfluxDB, and
the alerts the real rules engine raised on them). Grafana's macros are expanded as Grafana does; the template
variables take values their own queries return (city → district → device, chained), several at once where
there are several, so the regex formatting of multi-value selections is exercised with Thai district names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboards import citydata
from tests.dashboards.grafana import ALL, Query, expand, load_dashboards, queries
from tests.servers import InfluxServer

BOARDS = load_dashboards()
INFLUX_QUERIES = [q for q in queries(BOARDS) if q.kind == "influxql"]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InfluxServer, citydata.CityData]]:
    workdir = tmp_path_factory.mktemp("influx-dashboards")
    with InfluxServer(workdir) as influx:
        data = citydata.load(influx.url, influx.database, f"sqlite:///{workdir / 'alerts.db'}")
        yield influx, data


def series(influx: InfluxServer, query: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for result in influx.query(query):
        out.extend(result.get("series", []))
    return out


def tag_values(influx: InfluxServer, query: str) -> list[str]:
    return sorted({row[1] for s in series(influx, query) for row in s["values"]})


@pytest.fixture(scope="module")
def variables(city: tuple[InfluxServer, citydata.CityData]) -> dict[str, dict[str, object]]:
    """Per dashboard: the values each place variable takes, resolved through its own (chained) query."""
    influx, _ = city
    resolved: dict[str, dict[str, object]] = {}
    for name, board in BOARDS.items():
        chosen: dict[str, object] = {}
        for variable in board["templating"]["list"]:
            if variable["datasource"]["uid"] != "nakhon-influxdb":
                continue
            values = tag_values(influx, expand(variable["query"], "influxql", chosen))
            assert values, f"{name}: ${variable['name']} has no values"
            # a city is chosen singly, districts and devices as multi-value selections of everything offered
            chosen[variable["name"]] = values[:1] if variable["name"] == "city" else values
        resolved[name] = chosen
    return resolved


def test_every_dashboard_has_influxql_queries() -> None:
    by_board = {q.dashboard for q in INFLUX_QUERIES}
    assert by_board == set(BOARDS) - {"pipeline-health"}


def test_place_variables_are_chained_and_resolve(variables: dict[str, dict[str, object]]) -> None:
    for name, chosen in variables.items():
        if name == "pipeline-health":
            continue
        assert list(chosen) == ["city", "district", "device"], name
        assert chosen["city"] == ["laem-chabang"]
        districts = chosen["district"]
        assert isinstance(districts, list) and any(ord(c) > 0x0E00 for c in districts[0]), "Thai district names"


@pytest.mark.parametrize("query", INFLUX_QUERIES, ids=lambda q: q.id)
def test_influxql_query_returns_data(
    query: Query, city: tuple[InfluxServer, citydata.CityData], variables: dict[str, dict[str, object]]
) -> None:
    influx, _ = city
    text = expand(query.text, "influxql", variables[query.dashboard])
    assert "$" not in text.replace("$/", "").replace("$'", ""), f"unexpanded macro in {text}"
    found = series(influx, text)  # raises on an InfluxQL error
    assert found and any(s["values"] for s in found), f"no data for {query.id}:\n{text}"


def test_queries_also_run_with_all_selected(city: tuple[InfluxServer, citydata.CityData]) -> None:
    """`All` is the default selection: the custom all value `.*` must work in every regex."""
    influx, _ = city
    empty = []
    for query in INFLUX_QUERIES:
        text = expand(query.text, "influxql", {"city": ALL, "district": ALL, "device": ALL})
        if not series(influx, text):
            empty.append(query.id)
    assert empty == []


def test_active_alerts_list_only_open_alerts(city: tuple[InfluxServer, citydata.CityData]) -> None:
    """The overview's active-alerts table: the last state per (rule, device), firing or pending only."""
    influx, data = city
    [panel] = [p for p in BOARDS["city-overview"]["panels"] if p["title"].endswith("Active alerts")]
    text = expand(panel["targets"][0]["query"], "influxql", {"city": ALL, "district": ALL, "device": ALL})
    rows = influx.rows(text)
    last: dict[tuple[str, str], tuple[int, str]] = {}
    for point in data.alerts:
        key = (point.tags["rule"], point.tags["device_id"])
        if key not in last or point.time_ns >= last[key][0]:
            last[key] = (point.time_ns, str(point.fields["state"]))
    want = {key for key, (_, state) in last.items() if state in ("firing", "pending")}
    assert want, "the simulated city should leave some alerts open"
    assert {(r["rule"], r["device_id"]) for r in rows} == want
    assert {r["state"] for r in rows} <= {"firing", "pending"}


def test_silent_devices_panel_names_the_silent_devices(city: tuple[InfluxServer, citydata.CityData]) -> None:
    influx, data = city
    [panel] = [p for p in BOARDS["city-overview"]["panels"] if "silent past their heartbeat" in p["title"]]
    text = expand(panel["targets"][0]["query"], "influxql", {"city": ALL, "district": ALL, "device": ALL})
    rows = influx.rows(text)
    assert sorted((r["rule"], r["device_id"], r["state"]) for r in rows) == sorted(
        (f"{feed}_device_silent", device_id, "firing") for feed, device_id in data.silent_devices.items()
    )


def test_device_map_recency_marks_the_silent_bus(city: tuple[InfluxServer, citydata.CityData]) -> None:
    """The overview map's bus recency query counts readings of the last 10 min: none for the silent bus."""
    influx, data = city
    [panel] = [p for p in BOARDS["city-overview"]["panels"] if p["type"] == "geomap"]
    [bus] = [t for t in panel["targets"] if '"bus"' in t.get("query", "")]
    rows = influx.rows(expand(bus["query"], "influxql", {"city": ALL, "district": ALL, "device": ALL}))
    reporting = {r["device_id"] for r in rows if r["readings_bus"]}
    buses = {d.device_id for d in data.devices if d.feed == "bus"}
    assert reporting == buses - {data.silent_devices["bus"]}


def test_written_points_cover_every_feed(city: tuple[InfluxServer, citydata.CityData], tmp_path: Path) -> None:
    influx, data = city
    for measurement in ("air_quality", "water_level", "energy", "bus"):
        assert influx.rows(f'SELECT count(*) FROM "{measurement}"'), measurement
    assert influx.count("alerts", "alert_id") == len(data.alerts)
