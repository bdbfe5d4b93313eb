"""The dashboards as data: generated JSON is current, and every query keeps to the schema contract.

The contract is read from where it is defined: canonical fields from `collectors.feeds.FEED_SPECS`, derived
fields and tags and the `alerts` schema from the README's "Schema contract" tables, the standard tags from
`Reading.to_point`, rule names from `rules/defaults/*.yaml`, metric names from the Prometheus registry.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from collectors.feeds import FEED_SPECS
from core.model import Reading
from dashboards import build
from tests.dashboards.grafana import JSON_DIR, Query, identifiers, load_dashboards, queries

ROOT = Path(__file__).resolve().parents[2]
BOARDS = load_dashboards()
STANDARD_TAGS = frozenset(Reading("d", "air", "c", "x", 0, {}).to_point().tags)
THAI = re.compile(r"[\u0E00-\u0E7F]")
LATIN = re.compile(r"[A-Za-z]")


def readme_contract() -> dict[str, tuple[set[str], set[str]]]:
    """measurement -> (fields, tags) from the README's derived-fields table (incl. the `alerts` row)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("Derived fields", 1)[1].split("\n\n", 2)[1]
    out: dict[str, tuple[set[str], set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        measurement = cells[0].strip("`")
        body = re.sub(r"=\s*`[^`]+`(\s*/\s*`[^`]+`)*", "", cells[1])  # tag values such as `on_peak` / `off_peak`
        fields: set[str] = set()
        tags: set[str] = set()
        target = fields
        for token in re.findall(r"`[^`]+`|\b(?:tags?|fields)\b", body):
            if token in ("tag", "tags"):
                target = tags
            elif token == "fields":
                target = fields
            else:
                target.add(token.strip("`"))
        out[measurement] = (fields, tags)
    return out


def schema() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    derived = readme_contract()
    contract: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for spec in FEED_SPECS.values():
        extra_fields, extra_tags = derived.get(spec.measurement, (set(), set()))
        contract[spec.measurement] = (
            frozenset(spec.field_names) | frozenset(extra_fields),
            STANDARD_TAGS | frozenset(extra_tags),
        )
    alert_fields, alert_tags = derived["alerts"]
    contract["alerts"] = (frozenset(alert_fields), frozenset(alert_tags))
    return contract


SCHEMA = schema()


def test_readme_contract_is_read() -> None:
    assert "tou" in SCHEMA["energy"][1] and "on_peak" not in SCHEMA["energy"][1]
    assert {"aqi_th", "pm25_24h_ugm3"} <= SCHEMA["air_quality"][0]
    assert {"level_pct_bank", "rise_cm_per_10min"} <= SCHEMA["water_level"][0]
    assert SCHEMA["alerts"] == (
        frozenset({"state", "value", "message_th", "message_en", "alert_id"}),
        frozenset({"rule", "device_id", "city", "district", "feed", "severity"}),
    )


def test_generated_json_is_current(tmp_path: Path) -> None:
    build.build(tmp_path)
    fresh = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text(encoding="utf-8") for p in JSON_DIR.glob("*.json")}
    assert fresh.keys() == committed.keys(), "run `python -m dashboards.build`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], f"stale dashboards {stale}: run `python -m dashboards.build`"


def test_the_six_dashboards_exist() -> None:
    assert set(BOARDS) == {"city-overview", "air-quality", "flood", "energy", "school-bus", "pipeline-health"}
    assert len({b["uid"] for b in BOARDS.values()}) == len(BOARDS)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_conventions(name: str) -> None:
    board = BOARDS[name]
    assert board["timezone"] == "Asia/Bangkok"
    for thing in [board, *board["panels"]]:
        if thing.get("type") == "text":
            continue
        assert THAI.search(thing["title"]) and LATIN.search(thing["title"]), f"title not Thai + English: {thing}"
        assert THAI.search(thing["description"]) and LATIN.search(thing["description"]), thing["title"]
    uids = {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", [])}
    assert uids <= {"nakhon-influxdb", "nakhon-prometheus", "nakhon-registry"}
    grid = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in board["panels"]]
    assert len(set(grid)) == len(grid) and all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in board["panels"])


@pytest.mark.parametrize("name", sorted(set(BOARDS) - {"pipeline-health"}))
def test_influx_dashboards_have_alert_annotations_and_place_variables(name: str) -> None:
    board = BOARDS[name]
    [annotation] = [a for a in board["annotations"]["list"] if not a.get("builtIn")]
    assert annotation["datasource"]["uid"] == "nakhon-influxdb" and 'FROM "alerts"' in annotation["query"]
    assert "$timeFilter" in annotation["query"]
    columns = set(re.findall(r'"(\w+)"', annotation["query"].split("FROM")[0]))
    assert annotation["textColumn"] in columns
    assert set(annotation["tagsColumn"].split(",")) <= columns
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["city", "district", "device"]
    district, device = board["templating"]["list"][1:]
    assert "${city:regex}" in district["query"]
    assert "${city:regex}" in device["query"] and "${district:regex}" in device["query"]
    assert any(p["type"] == "timeseries" for p in board["panels"])


@pytest.mark.parametrize("name", sorted(set(BOARDS) - {"pipeline-health"}))
def test_influx_panel_queries_use_grafana_macros(name: str) -> None:
    for q in queries({name: BOARDS[name]}):
        if q.kind != "influxql" or q.role != "panel":
            continue
        assert "$timeFilter" in q.text or "now() - " in q.text, q.id
        assert "${city:regex}" in q.text, q.id
        if "GROUP BY time(" in q.text:
            assert "GROUP BY time($__interval)" in q.text, q.id


ALL_QUERIES = [q for q in queries(BOARDS) if q.kind == "influxql"]


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.id)
def test_influxql_references_only_the_schema_contract(query: Query) -> None:
    alias = ""
    if query.role == "panel":
        board = BOARDS[query.dashboard]
        title, ref = query.where.rsplit("/", 1)
        [target] = [t for p in board["panels"] if p["title"] == title for t in p["targets"] if t["refId"] == ref]
        alias = target.get("alias", "")
    ids = identifiers(query.text, alias)
    assert ids.measurements, f"no FROM measurement in {query.text}"
    unknown = [m for m in ids.measurements if m not in SCHEMA]
    assert unknown == [], f"measurements outside the contract: {unknown}"
    fields = frozenset().union(*(SCHEMA[m][0] for m in ids.measurements))
    tags = frozenset().union(*(SCHEMA[m][1] for m in ids.measurements))
    # in a subquery, the outer statement reads the inner one's aliases
    assert ids.fields - fields == set(), f"not fields of {ids.measurements}: {ids.fields - fields}"
    assert ids.tags - tags == set(), f"not tag keys of {ids.measurements}: {ids.tags - tags}"
    assert ids.other - fields - tags == set(), f"unknown identifiers: {ids.other - fields - tags}"


def test_schema_check_catches_a_wrong_name() -> None:
    ids = identifiers('SELECT mean("pm25") FROM "air_quality" WHERE $timeFilter GROUP BY time(1m), "station"')
    assert ids.fields == {"pm25"} and ids.tags == {"station"}
    assert not ids.fields <= SCHEMA["air_quality"][0] and not ids.tags <= SCHEMA["air_quality"][1]


def test_alert_rule_names_exist_in_the_shipped_rules() -> None:
    names = set()
    for path in (ROOT / "rules" / "defaults").glob("*.yaml"):
        names |= {rule["name"] for rule in yaml.safe_load(path.read_text(encoding="utf-8"))["rules"]}
    referenced = set()
    for q in ALL_QUERIES:
        referenced |= set(re.findall(r"\"rule\" = '(\w+)'", q.text))
        for alternation in re.findall(r'"rule" =~ /\^\(([\w|]+)\)\$/', q.text):
            referenced |= set(alternation.split("|"))
    assert {build.RULE_BUS_OVER_SPEED, build.RULE_BUS_CHILD_LEFT} <= referenced
    assert referenced <= names
    heartbeat = {n for n in names if re.search(build.HEARTBEAT_RULES_RE, n)}
    assert heartbeat == {f"{feed}_device_silent" for feed in FEED_SPECS}


def test_aqi_thresholds_are_the_pcd_bands() -> None:
    steps = build.AQI_TH_THRESHOLDS["steps"]
    assert [(s["value"], s["color"]) for s in steps] == [
        (None, "blue"), (26, "green"), (51, "yellow"), (101, "orange"), (201, "red")
    ]
    [panel] = [p for p in BOARDS["air-quality"]["panels"] if p["title"].endswith("Thai AQI")]
    assert panel["fieldConfig"]["defaults"]["thresholds"] == build.AQI_TH_THRESHOLDS
    [flood] = [p for p in BOARDS["flood"]["panels"] if p["title"].endswith("Water level against the bank")]
    assert [s["value"] for s in flood["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 70, 100]


def test_prometheus_metric_names_exist() -> None:
    """Every metric a PromQL query names is one the code registers (counters with their `_total` suffix)."""
    from prometheus_client import REGISTRY

    import collectors.metrics  # noqa: F401 - registers the metrics
    import rules.metrics  # noqa: F401

    known: set[str] = set()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            known.add(sample.name)
        known.add(metric.name + ("_total" if metric.type == "counter" else ""))
        if metric.type == "histogram":
            known.add(metric.name + "_bucket")
    named = set()
    for q in queries(BOARDS):
        if q.kind == "promql":
            named |= set(re.findall(r"\bnakhon_\w+", q.text))
    assert named and named <= known, named - known
