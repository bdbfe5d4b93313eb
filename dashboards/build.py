"""Generate nakhon's Grafana dashboards (plain dicts → JSON) into `dashboards/json/`.

    python -m dashboards.build                 # rewrite dashboards/json/*.json
    python -m dashboards.build --out DIR       # write elsewhere (the tests compare a fresh build with the repo)

No third-party dependency: neither grafanalib nor grafana-foundation-sdk is installed, and the JSON model
Grafana loads is plain data. Queries use Grafana's own macros and variable formats (`$timeFilter`,
`$__interval`, `${city:regex}`), exactly as Grafana's InfluxQL, PostgreSQL and Prometheus datasources expand
them. Datasource uids are fixed by `deploy/grafana/provisioning/datasources/nakhon.yaml`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, Unpack

JSON_DIR = Path(__file__).resolve().parent / "json"

INFLUX: dict[str, str] = {"type": "influxdb", "uid": "nakhon-influxdb"}
PROM: dict[str, str] = {"type": "prometheus", "uid": "nakhon-prometheus"}
# The device registry (gateway) on PostgreSQL, read-only: the only place device positions live.
REGISTRY: dict[str, str] = {"type": "grafana-postgresql-datasource", "uid": "nakhon-registry"}

TIMEZONE = "Asia/Bangkok"
SCHEMA_VERSION = 39
TAGS = ["nakhon"]

# Rule names of rules/defaults/*.yaml that dashboards single out (the tests check they exist).
RULE_BUS_OVER_SPEED = "bus_over_speed"
RULE_BUS_CHILD_LEFT = "bus_child_left"
HEARTBEAT_RULES_RE = "_device_silent$"  # air_device_silent, flood_device_silent, ... (rules/defaults/heartbeat.yaml)

# The filter every InfluxQL panel query carries: Grafana's time range plus the chained template variables.
FILTER = (
    '$timeFilter AND "city" =~ /^${city:regex}$/ AND "district" =~ /^${district:regex}$/ '
    'AND "device_id" =~ /^${device:regex}$/'
)
PLACE_FILTER = '"city" =~ /^${city:regex}$/ AND "district" =~ /^${district:regex}$/'

Json = dict[str, Any]


# -- thresholds ------------------------------------------------------------------------------------------------


def steps(base: str, *pairs: tuple[float, str]) -> Json:
    first: list[Json] = [{"color": base, "value": None}]
    return {"mode": "absolute", "steps": first + [{"color": c, "value": v} for v, c in pairs]}


# Thai PCD AQI bands (thailand.md): 0–25 blue, 26–50 green, 51–100 yellow, 101–200 orange, >200 red.
AQI_TH_THRESHOLDS = steps("blue", (26, "green"), (51, "yellow"), (101, "orange"), (201, "red"))
AQI_TH_MAPPINGS: list[Json] = [
    {
        "type": "range",
        "options": {"from": lo, "to": hi, "result": {"text": text, "color": color}},
    }
    for lo, hi, text, color in (
        (0, 25, "ดีมาก · Very good", "blue"),
        (26, 50, "ดี · Good", "green"),
        (51, 100, "ปานกลาง · Moderate", "yellow"),
        (101, 200, "เริ่มมีผลกระทบต่อสุขภาพ · Starting to affect health", "orange"),
        (201, 100000, "มีผลกระทบต่อสุขภาพ · Affects health", "red"),
    )
]
# ThaiWater percent-of-bank legend (UNVERIFIED, see collectors/domain/README.md): 70 high, 100 overbank.
BANK_THRESHOLDS = steps("green", (70, "orange"), (100, "red"))
RISE_THRESHOLDS = steps("green", (10, "orange"))  # rules/defaults/flood.yaml flood_rise_cm_per_10min default


# -- queries ---------------------------------------------------------------------------------------------------


def influx(query: str, ref: str = "A", *, fmt: str = "time_series", alias: str = "") -> Json:
    target: Json = {"refId": ref, "datasource": INFLUX, "rawQuery": True, "query": query, "resultFormat": fmt}
    if alias:
        target["alias"] = alias
    return target


def prom(expr: str, ref: str = "A", *, legend: str = "", instant: bool = False) -> Json:
    return {
        "refId": ref,
        "datasource": PROM,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }


def registry_sql(query: str, ref: str) -> Json:
    return {"refId": ref, "datasource": REGISTRY, "rawQuery": True, "editorMode": "code", "format": "table",
            "rawSql": query}


def registry_positions(feed: str | None, ref: str = "A") -> Json:
    """Active devices with a position, from the registry's `devices` table (lat/lon are not in InfluxDB)."""
    feed_filter = f"feed = '{feed}' AND " if feed else ""
    return registry_sql(
        "SELECT device_id, name, feed, district, lat, lon FROM devices "
        f"WHERE {feed_filter}status = 'active' AND lat IS NOT NULL AND lon IS NOT NULL "
        "AND city ~ '^${city:regex}$' AND district ~ '^${district:regex}$'",
        ref,
    )


def active_alerts_query(extra: str = "") -> str:
    """The last state of each (rule, device) — one open alert each — kept when it is firing or pending.

    Grouped by tags (alert_id is a field); looks back 30 days whatever the dashboard range, so an alert that
    fired a week ago and is still open is listed."""
    return (
        'SELECT "state", "severity", "rule", "device_id", "district", "value", "message_th", "message_en", '
        '"alert_id" FROM (SELECT last("state") AS "state", last("value") AS "value", '
        'last("message_th") AS "message_th", last("message_en") AS "message_en", last("alert_id") AS "alert_id" '
        f'FROM "alerts" WHERE time > now() - 30d AND {PLACE_FILTER}{extra} '
        'GROUP BY "rule", "device_id", "district", "severity") '
        "WHERE \"state\" = 'firing' OR \"state\" = 'pending'"
    )


def select(measurement: str, field: str, agg: str = "mean", *, interval: bool = True,
           by: str | None = "device_id") -> str:
    """`agg(field)` of one measurement under FILTER, grouped per `$__interval` (gaps left empty) and/or tag `by`.

    The defaults give one series per device, the shape of most panels."""
    group = [g for g in ("time($__interval)" if interval else "", f'"{by}"' if by else "") if g]
    query = f'SELECT {agg}("{field}") FROM "{measurement}" WHERE {FILTER}'
    if group:
        query += " GROUP BY " + ", ".join(group)
    return query + (" fill(none)" if interval else "")


def interval_targets(measurement: str, agg: str, *fields: str | tuple[str, str]) -> list[Json]:
    """One target per field (`field` or `(field, alias)`, alias defaulting to the field): `agg` of all the
    selected devices per interval, refs A, B, ..."""
    named = [(f, f) if isinstance(f, str) else f for f in fields]
    return [influx(select(measurement, field, agg, by=None), chr(ord("A") + i), alias=alias)
            for i, (field, alias) in enumerate(named)]


def alert_history_query(rule: str) -> str:
    return (
        'SELECT "state", "device_id", "district", "severity", "value", "message_th", "message_en", "alert_id" '
        f"FROM \"alerts\" WHERE {FILTER} AND \"rule\" = '{rule}'"
    )


# -- panels ----------------------------------------------------------------------------------------------------


def titled(th: str, en: str) -> str:
    return f"{th} · {en}"


def panel(kind: str, title: str, description: str, targets: list[Json], w: int, h: int, **extra: Any) -> Json:
    datasource = targets[0]["datasource"] if targets else INFLUX
    body: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "datasource", "uid": "-- Mixed --"}
        if len({t["datasource"]["uid"] for t in targets}) > 1
        else datasource,
        "targets": targets,
        "gridPos": {"w": w, "h": h},
    }
    body.update(extra)
    return body


class PanelOptions(TypedDict, total=False):
    """Keyword options the panel kinds share; the subclasses type the helpers that pass them on."""

    unit: str
    thresholds: Json | None
    w: int
    h: int


class SeriesOptions(PanelOptions, total=False):
    """The keyword options of `timeseries`."""

    threshold_style: str
    draw: str
    stack: bool
    decimals: int | None


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str = "short",
    thresholds: Json | None = None,
    threshold_style: str = "off",
    draw: str = "line",
    stack: bool = False,
    w: int = 12,
    h: int = 8,
    decimals: int | None = None,
) -> Json:
    custom: Json = {
        "drawStyle": draw,
        "lineWidth": 1,
        "fillOpacity": 20 if draw == "bars" else 5,
        "spanNulls": True,
        "showPoints": "never",
        "thresholdsStyle": {"mode": threshold_style},
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults: Json = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if thresholds:
        defaults["thresholds"] = thresholds
    if decimals is not None:
        defaults["decimals"] = decimals
    return panel(
        "timeseries", title, description, targets, w, h,
        fieldConfig={"defaults": defaults, "overrides": []},
        options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
                 "tooltip": {"mode": "multi", "sort": "desc"}},
    )


def table(title: str, description: str, targets: list[Json], *, w: int = 24, h: int = 8,
          overrides: list[Json] | None = None, transformations: list[Json] | None = None) -> Json:
    return panel(
        "table", title, description, targets, w, h,
        fieldConfig={"defaults": {"custom": {"align": "auto", "filterable": True}}, "overrides": overrides or []},
        options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        transformations=transformations or [],
    )


def colored_state_override() -> Json:
    return {
        "matcher": {"id": "byName", "options": "state"},
        "properties": [
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            {"id": "mappings", "value": [{"type": "value", "options": {
                "firing": {"text": "firing · กำลังแจ้งเตือน", "color": "red"},
                "pending": {"text": "pending · รอยืนยัน", "color": "orange"},
                "resolved": {"text": "resolved · คลี่คลายแล้ว", "color": "green"},
            }}]},
        ],
    }


class StatOptions(PanelOptions, total=False):
    """The keyword options of `stat`."""

    mappings: list[Json] | None
    reduce: str


def stat(title: str, description: str, targets: list[Json], *, unit: str = "short", thresholds: Json | None = None,
         mappings: list[Json] | None = None, w: int = 6, h: int = 5, reduce: str = "lastNotNull") -> Json:
    return panel(
        "stat", title, description, targets, w, h,
        fieldConfig={"defaults": {"unit": unit, "thresholds": thresholds or steps("green"),
                                  "mappings": mappings or [], "color": {"mode": "thresholds"}}, "overrides": []},
        options={"reduceOptions": {"calcs": [reduce], "fields": "", "values": False}, "colorMode": "background",
                 "graphMode": "area", "textMode": "auto"},
    )


class GaugeOptions(PanelOptions, total=False):
    """The keyword options of `bargauge`."""

    mappings: list[Json] | None
    max_value: float | None
    transformations: list[Json] | None


def bargauge(title: str, description: str, targets: list[Json], *, unit: str = "short",
             thresholds: Json | None = None, mappings: list[Json] | None = None, w: int = 12, h: int = 8,
             max_value: float | None = None, transformations: list[Json] | None = None) -> Json:
    defaults: Json = {"unit": unit, "thresholds": thresholds or steps("green"), "mappings": mappings or [],
                      "color": {"mode": "thresholds"}, "min": 0}
    if max_value is not None:
        defaults["max"] = max_value
    return panel(
        "bargauge", title, description, targets, w, h,
        fieldConfig={"defaults": defaults, "overrides": []},
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                 "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True},
        transformations=transformations or [],
    )


def geomap(title: str, description: str, targets: list[Json], *, color_field: str, thresholds: Json,
           mappings: list[Json] | None = None, transformations: list[Json] | None = None, w: int = 12,
           h: int = 12, unit: str = "short") -> Json:
    return panel(
        "geomap", title, description, targets, w, h,
        fieldConfig={"defaults": {"unit": unit, "thresholds": thresholds, "mappings": mappings or [],
                                  "color": {"mode": "thresholds"}}, "overrides": []},
        options={
            "view": {"id": "fit", "allLayers": True, "zoom": 12},
            "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
            "basemap": {"type": "default", "name": "Basemap"},
            "tooltip": {"mode": "details"},
            "layers": [
                {
                    "type": "markers",
                    "name": title,
                    "tooltip": True,
                    "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                    "config": {
                        "showLegend": True,
                        "style": {
                            "color": {"field": color_field, "fixed": "dark-green"},
                            "size": {"fixed": 7},
                            "opacity": 0.9,
                            "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                            "text": {"mode": "field", "field": "device_id", "fixed": ""},
                            "textConfig": {"fontSize": 9, "offsetY": -12, "textAlign": "center"},
                        },
                    },
                }
            ],
        },
        transformations=transformations or [],
    )


def per_device_series(measurement: str, field: str, title_th: str, title_en: str, description: str, *,
                      agg: str = "mean", **options: Unpack[SeriesOptions]) -> Json:
    """A timeseries of `agg(field)` per interval, one line per device."""
    return timeseries(titled(title_th, title_en), description,
                      [influx(select(measurement, field, agg), alias="$tag_device_id")], **options)


def per_device_gauge(measurement: str, field: str, title_th: str, title_en: str, description: str, *,
                     agg: str = "last", **options: Unpack[GaugeOptions]) -> Json:
    """A bar gauge of `agg(field)` over the range (the latest value by default), one bar per device."""
    return bargauge(titled(title_th, title_en), description,
                    [influx(select(measurement, field, agg, interval=False), alias="$tag_device_id")], **options)


def alerts_table(title_th: str, title_en: str, description: str, query: str, *, w: int = 24, h: int = 8) -> Json:
    """A table of alert rows (`active_alerts_query` / `alert_history_query`), the state column coloured."""
    return table(titled(title_th, title_en), description, [influx(query, fmt="table")], w=w, h=h,
                 overrides=[colored_state_override()])


def join_on_device() -> Json:
    return {"id": "joinByField", "options": {"byField": "device_id", "mode": "outer"}}


def text(content: str, *, w: int = 24, h: int = 3) -> Json:
    return {"type": "text", "title": "", "gridPos": {"w": w, "h": h},
            "options": {"mode": "markdown", "content": content}}


# -- dashboard -------------------------------------------------------------------------------------------------


def layout(panels: list[Json]) -> list[Json]:
    """Give panels ids and left-to-right, top-to-bottom positions on Grafana's 24-column grid."""
    x = y = row_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p = {"id": i, **p, "gridPos": {"x": x, "y": y, "w": w, "h": h}}
        x += w
        row_h = max(row_h, h)
        out.append(p)
    return out


def query_variable(name: str, label: str, datasource: Json, query: str | Json, definition: str) -> Json:
    """A multi-value template variable (with All = `.*`) filled by a datasource query, refreshed with the range."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource,
        "query": query,
        "definition": definition,
        "refresh": 2,  # on time-range change
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }


def influx_variable(name: str, label: str, query: str) -> Json:
    return query_variable(name, label, INFLUX, query, query)


def place_variables(measurements: list[str]) -> list[Json]:
    """city → district → device, each SHOW TAG VALUES query filtered by the variables before it."""
    source = ", ".join(f'"{m}"' for m in measurements)
    return [
        influx_variable("city", "เมือง · City", f'SHOW TAG VALUES FROM {source} WITH KEY = "city"'),
        influx_variable(
            "district",
            "เขต/ตำบล · District",
            f'SHOW TAG VALUES FROM {source} WITH KEY = "district" WHERE "city" =~ /^${{city:regex}}$/',
        ),
        influx_variable(
            "device",
            "อุปกรณ์ · Device",
            f'SHOW TAG VALUES FROM {source} WITH KEY = "device_id" '
            'WHERE "city" =~ /^${city:regex}$/ AND "district" =~ /^${district:regex}$/',
        ),
    ]


def alerts_annotation(feeds: list[str]) -> Json:
    feed_re = "|".join(feeds)
    return {
        "name": "การแจ้งเตือน · Alerts",
        "datasource": INFLUX,
        "enable": True,
        "iconColor": "red",
        "query": (
            'SELECT "message_th", "message_en", "state", "rule", "severity", "device_id" FROM "alerts" '
            f'WHERE {FILTER} AND "feed" =~ /^({feed_re})$/'
        ),
        "textColumn": "message_th",
        "tagsColumn": "rule,severity,state,device_id",
        "titleColumn": "",
        "timeEndColumn": "",
    }


def dashboard(uid: str, title: str, description: str, panels: list[Json], *, variables: list[Json],
              annotations: list[Json], refresh: str = "1m", time_from: str = "now-6h") -> Json:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": TIMEZONE,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [{"type": "dashboards", "tags": TAGS, "asDropdown": True, "title": "nakhon", "includeVars": True,
                   "keepTime": True}],
        "annotations": {"list": [builtin, *annotations]},
        "templating": {"list": variables},
        "panels": layout(panels),
    }


def feed_dashboard(name: str, feed: str, measurement: str, title_th: str, title_en: str, description: str,
                   panels: list[Json], *, refresh: str = "1m") -> Json:
    """`nakhon-<name>`: one feed's dashboard, place variables over its measurement, its alerts as annotations."""
    return dashboard(f"nakhon-{name}", titled(title_th, title_en), description, panels,
                     variables=place_variables([measurement]), annotations=[alerts_annotation([feed])],
                     refresh=refresh)


# -- the dashboards --------------------------------------------------------------------------------------------

ALL_MEASUREMENTS = ["air_quality", "water_level", "energy", "bus"]
RECENCY = {  # measurement, a canonical field every device of the feed sends, the heartbeat default (rules)
    "air": ("air_quality", "pm25_ugm3", "2h"),
    "flood": ("water_level", "level_m", "30m"),
    "energy": ("energy", "energy_kwh", "30m"),
    "bus": ("bus", "speed_kmh", "10m"),
}


def city_overview() -> Json:
    recency_targets = [
        influx(
            f'SELECT count("{field}") AS "readings_{feed}" FROM "{measurement}" WHERE time > now() - {window} '
            f'AND {PLACE_FILTER} GROUP BY "device_id"',
            ref,
            fmt="table",
        )
        for ref, (feed, (measurement, field, window)) in zip("BCDE", RECENCY.items(), strict=True)
    ]
    device_map = geomap(
        titled("อุปกรณ์ทั้งหมด", "All devices"),
        "ตำแหน่งจากทะเบียนอุปกรณ์ สีตามการรายงานล่าสุด: เขียว = ส่งข้อมูลภายในรอบ heartbeat, แดง = เงียบ · "
        "Positions from the device registry; green = reported within its feed's heartbeat "
        "(air 2 h, flood 30 min, energy 30 min, bus 10 min), red = silent.",
        [registry_positions(None), *recency_targets],
        color_field="readings_recent",
        thresholds=steps("red", (1, "green")),
        mappings=[{"type": "special", "options": {"match": "null", "result": {"text": "silent · เงียบ",
                                                                              "color": "red"}}}],
        transformations=[
            join_on_device(),
            {"id": "calculateField", "options": {
                "mode": "reduceRow", "alias": "readings_recent", "replaceFields": False,
                "reduce": {"reducer": "sum", "include": [f"readings_{feed}" for feed in RECENCY]},
            }},
        ],
        w=12,
        h=14,
    )
    active = alerts_table(
        "การแจ้งเตือนที่ยังเปิดอยู่", "Active alerts",
        "สถานะล่าสุดของแต่ละกฎและอุปกรณ์ที่ยัง firing หรือ pending (ย้อนหลัง 30 วัน) · "
        "Last state per rule and device where it is firing or pending (30-day look-back).",
        active_alerts_query(), w=12, h=14,
    )
    rate = timeseries(
        titled("ข้อมูลที่บันทึกต่อวินาที", "Readings stored per second"),
        "จำนวนจุดข้อมูลที่บันทึกได้ต่อวินาที แยกตามประเภท · Points durably stored per second, by feed "
        "(Prometheus nakhon_points_stored_total; alert points excluded).",
        [prom('sum by (feed) (rate(nakhon_points_stored_total{feed!="alerts"}[1m]))', legend="{{feed}}")],
        unit="reqps",
        w=12,
    )
    silent = alerts_table(
        "อุปกรณ์ที่ขาดการติดต่อ", "Devices silent past their heartbeat",
        "การแจ้งเตือน heartbeat (*_device_silent) ที่ยังเปิดอยู่ · Open heartbeat alerts (rules *_device_silent).",
        active_alerts_query(f' AND "rule" =~ /{HEARTBEAT_RULES_RE}/'), w=12,
    )
    alert_rate = timeseries(
        titled("การเปลี่ยนสถานะการแจ้งเตือน", "Alert state changes"),
        "จำนวนการเปลี่ยนสถานะตามระดับความรุนแรง · Alert state changes by severity (alerts measurement).",
        [influx(select("alerts", "alert_id", "count", by="severity"), alias="$tag_severity")],
        draw="bars",
        stack=True,
        w=24,
        h=7,
    )
    return dashboard(
        "nakhon-overview",
        titled("ภาพรวมเมือง", "City overview"),
        "อุปกรณ์ การแจ้งเตือน และอัตราการรับข้อมูลของทั้งเมือง · Devices, alerts and ingest rate across the city.",
        [device_map, active, rate, silent, alert_rate],
        variables=place_variables(ALL_MEASUREMENTS),
        annotations=[alerts_annotation(["air", "flood", "energy", "bus"])],
    )


def air_quality() -> Json:
    m = "air_quality"
    aqi = per_device_series(
        m, "aqi_th", "ดัชนีคุณภาพอากาศ (AQI ไทย)", "Thai AQI",
        "AQI ตามเกณฑ์กรมควบคุมมลพิษ (PM2.5 ปรับปรุง มิ.ย. 2566) สีตามแถบ: ฟ้า 0–25, เขียว 26–50, เหลือง 51–100, "
        "ส้ม 101–200, แดง >200 · Thai PCD AQI with the PCD band colours.",
        agg="max", thresholds=AQI_TH_THRESHOLDS, threshold_style="area", w=16, h=9, decimals=0,
    )
    current = per_device_gauge(
        m, "aqi_th", "AQI ล่าสุดรายสถานี", "Latest AQI by station",
        "ค่า AQI ล่าสุดของแต่ละสถานี · Latest Thai AQI per station.",
        thresholds=AQI_TH_THRESHOLDS, mappings=AQI_TH_MAPPINGS, w=8, h=9, max_value=300,
    )
    pm24 = per_device_series(
        m, "pm25_24h_ugm3", "PM2.5 เฉลี่ย 24 ชั่วโมง", "PM2.5 24-hour mean",
        "ค่าเฉลี่ยเคลื่อนที่ 24 ชม. (pm25_24h_ugm3) ที่ใช้คำนวณ AQI · The 24 h rolling mean the AQI uses.",
        unit="conμgm3",
        thresholds=steps("blue", (15.1, "green"), (25.1, "yellow"), (37.6, "orange"), (75.1, "red")),
        threshold_style="line",
    )
    pm_raw = timeseries(
        titled("PM2.5 และ PM10 รายงานล่าสุด", "PM2.5 and PM10 as reported"),
        "ค่าที่สถานีรายงาน (ไม่เฉลี่ย) · Raw concentrations, mean per interval, all selected stations.",
        interval_targets(m, "mean", ("pm25_ugm3", "PM2.5"), ("pm10_ugm3", "PM10")),
        unit="conμgm3",
    )
    pollutant = table(
        titled("มลพิษหลักที่กำหนดค่า AQI", "Pollutant setting the AQI"),
        "ค่าล่าสุดของ AQI ไทยและ US พร้อมสารมลพิษหลัก · Latest Thai and US AQI with the pollutant that sets each.",
        [influx(f'SELECT last("aqi_th") AS "aqi_th", last("aqi_th_band") AS "aqi_th_band", '
                f'last("aqi_th_pollutant") AS "aqi_th_pollutant", last("aqi_us") AS "aqi_us", '
                f'last("aqi_us_pollutant") AS "aqi_us_pollutant" FROM "{m}" WHERE {FILTER} GROUP BY "device_id"',
                fmt="table")],
        w=12,
        h=12,
        overrides=[{"matcher": {"id": "byName", "options": "aqi_th"}, "properties": [
            {"id": "thresholds", "value": AQI_TH_THRESHOLDS},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
        ]}],
    )
    stations = geomap(
        titled("แผนที่สถานีตรวจวัด", "Station map"),
        "ตำแหน่งสถานีจากทะเบียนอุปกรณ์ สีตาม AQI ล่าสุด · Stations from the registry, coloured by the latest AQI.",
        [registry_positions("air"),
         influx(f'SELECT last("aqi_th") AS "aqi_th" FROM "{m}" WHERE {FILTER} GROUP BY "device_id"', "B",
                fmt="table")],
        color_field="aqi_th",
        thresholds=AQI_TH_THRESHOLDS,
        mappings=AQI_TH_MAPPINGS,
        transformations=[join_on_device()],
    )
    weather = timeseries(
        titled("อุณหภูมิและความชื้น", "Temperature and humidity"),
        "อุณหภูมิ (°C) และความชื้นสัมพัทธ์ (%) เฉลี่ย · Mean air temperature and relative humidity.",
        interval_targets(m, "mean", "temperature_c", "humidity_pct"),
        w=24,
        h=7,
    )
    return feed_dashboard(
        "air-quality", "air", m, "คุณภาพอากาศ", "Air quality",
        "AQI ไทย (กรมควบคุมมลพิษ) PM2.5 เฉลี่ย 24 ชม. และแผนที่สถานี · Thai AQI, PM2.5 24-hour mean, station map.",
        [aqi, current, pm24, pm_raw, pollutant, stations, weather],
    )


def flood() -> Json:
    m = "water_level"
    pct = per_device_series(
        m, "level_pct_bank", "ระดับน้ำเทียบตลิ่ง", "Water level against the bank",
        "ร้อยละของความสูงตลิ่งเหนือพื้น (นิยามของคลังข้อมูลน้ำ) เส้นเกณฑ์ 70% สูง และ 100% ล้นตลิ่ง · "
        "Percent of the bank height above ground (ThaiWater); 70 % high, 100 % overbank.",
        unit="percent", thresholds=BANK_THRESHOLDS, threshold_style="line+area", w=16, h=9,
    )
    now_pct = per_device_gauge(
        m, "level_pct_bank", "ระดับน้ำล่าสุดรายสถานี", "Latest level by gauge",
        "ร้อยละของตลิ่งล่าสุด · Latest percent of bank per gauge.",
        unit="percent", thresholds=BANK_THRESHOLDS, w=8, h=9, max_value=120,
    )
    rise = per_device_series(
        m, "rise_cm_per_10min", "อัตราการขึ้นของน้ำ", "Rise rate",
        "เซนติเมตรต่อ 10 นาที (ติดลบเมื่อลดลง) เกณฑ์แจ้งเตือนเริ่มต้น 10 ซม. · cm per 10 min (negative when "
        "falling); the default alert threshold is 10 cm.",
        thresholds=RISE_THRESHOLDS, threshold_style="line",
    )
    rain = per_device_series(
        m, "rain_mm", "ปริมาณฝน", "Rainfall",
        "ปริมาณฝนรวมต่อช่วงเวลา (มม.) รายสถานี · Rain per interval (mm), by gauge.",
        agg="sum", unit="lengthmm", draw="bars", stack=True,
    )
    level = per_device_series(
        m, "level_m", "ระดับน้ำ (ม.)", "Water level (m)",
        "ระดับน้ำเหนือหมุดอ้างอิงของสถานี (ม.รทก. เมื่อสำรวจแล้ว) · Level above the site datum (m MSL where surveyed).",
        unit="lengthm",
    )
    battery = per_device_gauge(
        m, "battery_pct", "แบตเตอรี่สถานี", "Gauge battery",
        "ระดับแบตเตอรี่ล่าสุด · Latest battery level.",
        unit="percent", thresholds=steps("red", (20, "orange"), (40, "green")), max_value=100,
    )
    return feed_dashboard(
        "flood", "flood", m, "ระดับน้ำ", "Flood",
        "ระดับน้ำเทียบตลิ่ง อัตราการขึ้น และปริมาณฝน · Level against the bank, rise rate and rainfall per gauge.",
        [pct, now_pct, rise, rain, level, battery],
    )


def energy() -> Json:
    m = "energy"
    demand = per_device_series(
        m, "demand_15min_kw", "ความต้องการไฟฟ้า 15 นาที", "15-minute demand",
        "demand_15min_kw สูงสุดต่อช่วง รายมิเตอร์; ค่าที่เกินสัญญาช่วง On-Peak จะแสดงเป็นการแจ้งเตือน · "
        "Max 15-minute demand per meter; on-peak demand above the contract shows as alert annotations.",
        agg="max", unit="kwatt", w=14, h=9,
    )
    contract = bargauge(
        titled("ความต้องการสูงสุดเทียบสัญญา", "Peak demand against contracted kW"),
        "ความต้องการสูงสุดในช่วงเวลาที่เลือก เป็นร้อยละของ kW ตามสัญญา (site.contracted_kw ในทะเบียน) · "
        "Peak 15-minute demand in the range as a percentage of the contracted kW from the registry.",
        [
            influx(f'SELECT max("demand_15min_kw") AS "peak_demand_kw" FROM "{m}" WHERE {FILTER} GROUP BY "device_id"',
                   "A", fmt="table"),
            registry_sql(
                "SELECT device_id, name, CAST(site->>'contracted_kw' AS DOUBLE PRECISION) AS contracted_kw "
                "FROM devices WHERE feed = 'energy' AND status = 'active' AND site->>'contracted_kw' IS NOT NULL "
                "AND city ~ '^${city:regex}$' AND district ~ '^${district:regex}$'",
                "B",
            ),
        ],
        unit="percent",
        thresholds=steps("green", (90, "orange"), (100, "red")),
        w=10,
        h=9,
        max_value=150,
        transformations=[
            {"id": "joinByField", "options": {"byField": "device_id", "mode": "inner"}},
            {"id": "calculateField", "options": {
                "mode": "binary", "alias": "pct_of_contract", "replaceFields": False,
                "binary": {"left": "peak_demand_kw", "operator": "/", "right": "contracted_kw"},
            }},
            {"id": "calculateField", "options": {
                "mode": "binary", "alias": "% of contract", "replaceFields": False,
                "binary": {"left": "pct_of_contract", "operator": "*", "right": "100"},
            }},
            {"id": "organize", "options": {"excludeByName": {"pct_of_contract": True, "Time": True}}},
        ],
    )
    kwh_site = per_device_gauge(
        m, "interval_kwh", "พลังงานไฟฟ้ารายอาคาร", "kWh by site",
        "ผลรวม interval_kwh ในช่วงเวลาที่เลือก · Sum of interval kWh over the range, per meter.",
        agg="sum", unit="kwatth", w=8, h=9,
    )
    tou = panel(
        "piechart",
        titled("สัดส่วน On-Peak / Off-Peak", "On-/off-peak split"),
        "พลังงานแยกตามช่วงเวลา TOU (จ.–ศ. 09:00–22:00 ยกเว้นวันหยุด) · kWh by TOU period (tag tou).",
        [influx(select(m, "interval_kwh", "sum", interval=False, by="tou"), alias="$tag_tou")],
        8,
        9,
        fieldConfig={"defaults": {"unit": "kwatth"}, "overrides": []},
        options={"reduceOptions": {"calcs": ["sum"], "fields": "", "values": False}, "pieType": "donut",
                 "legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"]}},
    )
    kwh_time = timeseries(
        titled("พลังงานไฟฟ้าตามเวลา", "kWh over time by TOU"),
        "interval_kwh รวมต่อช่วง แยก On-/Off-Peak · kWh per interval, stacked by TOU period.",
        [influx(select(m, "interval_kwh", "sum", by="tou"), alias="$tag_tou")],
        unit="kwatth",
        draw="bars",
        stack=True,
        w=8,
        h=9,
    )
    co2 = timeseries(
        titled("การปล่อยก๊าซเรือนกระจก", "CO2e"),
        "kgCO2e = kWh × ค่าการปล่อยของ อบก. (0.4750 ตั้งแต่ปี 2569) · kg CO2e from the TGO grid factor.",
        interval_targets(m, "sum", "co2e_kg"),
        unit="masskg",
        draw="bars",
        w=16,
    )
    co2_total = stat(
        titled("CO2e รวม", "Total CO2e"),
        "ผลรวมในช่วงเวลาที่เลือก · Sum over the range.",
        [influx(select(m, "co2e_kg", "sum", interval=False, by=None), alias="co2e_kg")],
        unit="masskg",
        w=8,
        h=8,
    )
    pf = per_device_series(
        m, "power_factor", "ตัวประกอบกำลัง", "Power factor",
        "ต่ำกว่า 0.85 มีค่าปรับ · Below 0.85 the PF charge applies.",
        agg="min", thresholds=steps("red", (0.85, "green")), threshold_style="line", w=24, h=7,
    )
    return feed_dashboard(
        "energy", "energy", m, "พลังงาน", "Energy",
        "ความต้องการไฟฟ้าเทียบสัญญา kWh รายอาคาร สัดส่วน TOU และ CO2e · Demand against contract, kWh by site, TOU "
        "split and CO2e.",
        [demand, contract, kwh_site, tou, kwh_time, co2, co2_total, pf],
    )


def school_bus() -> Json:
    m = "bus"
    positions = geomap(
        titled("ตำแหน่งรถรับส่งนักเรียน", "Bus positions"),
        "ตำแหน่งล่าสุดและความเร็วของรถแต่ละคัน สีตามความเร็วเกินกำหนด · Latest position and speed of each bus, "
        "coloured by km/h over the limit.",
        [influx(f'SELECT last("lat") AS "lat", last("lon") AS "lon", last("speed_kmh") AS "speed_kmh", '
                f'last("over_speed_kmh") AS "over_speed_kmh", last("occupancy") AS "occupancy" FROM "{m}" '
                f'WHERE {FILTER} GROUP BY "device_id"', fmt="table")],
        color_field="over_speed_kmh",
        thresholds=steps("green", (0.1, "orange"), (10, "red")),
        unit="velocitykmh",
        w=14,
        h=14,
    )
    speeding_now = alerts_table(
        "การแจ้งเตือนที่ยังเปิดอยู่", "Open bus alerts",
        "ขับเร็วเกินกำหนด และเด็กติดในรถ ที่ยัง firing/pending · Over-speed and child-left-behind alerts still open.",
        active_alerts_query(f' AND "rule" =~ /^({RULE_BUS_OVER_SPEED}|{RULE_BUS_CHILD_LEFT})$/'), w=10, h=14,
    )
    speed = per_device_series(
        m, "speed_kmh", "ความเร็ว", "Speed",
        "ความเร็วสูงสุดต่อช่วง รายคัน · Max speed per interval, per bus.",
        agg="max", unit="velocitykmh", thresholds=steps("green", (60, "red")), threshold_style="line",
    )
    over = per_device_series(
        m, "over_speed_kmh", "ความเร็วเกินกำหนด", "Over the speed limit",
        "กม./ชม. ที่เกินขีดจำกัดของพื้นที่ (over_speed_kmh) · km/h above the zone's limit.",
        agg="max", unit="velocitykmh", draw="bars",
    )
    speeding = alerts_table(
        "ประวัติการขับเร็วเกินกำหนด", "Speeding alerts",
        f"การแจ้งเตือนของกฎ {RULE_BUS_OVER_SPEED} ในช่วงเวลาที่เลือก · State changes of rule {RULE_BUS_OVER_SPEED}.",
        alert_history_query(RULE_BUS_OVER_SPEED), w=12,
    )
    child = alerts_table(
        "ประวัติเด็กติดในรถ", "Child-left-behind alerts",
        f"การแจ้งเตือนของกฎ {RULE_BUS_CHILD_LEFT} (ดับเครื่องแล้วยังนับเด็กได้) · State changes of rule "
        f"{RULE_BUS_CHILD_LEFT} (ignition off, children still counted).",
        alert_history_query(RULE_BUS_CHILD_LEFT), w=12,
    )
    left = per_device_series(
        m, "child_left_s", "เวลาที่เด็กอยู่ในรถหลังดับเครื่อง", "Children on board after ignition off",
        "child_left_s: วินาทีนับจากดับเครื่องขณะยังมีเด็กในรถ · Seconds since ignition off with children counted.",
        agg="max", unit="s", thresholds=steps("green", (300, "red")), threshold_style="line",
    )
    occupancy = per_device_series(
        m, "occupancy", "จำนวนเด็กบนรถ", "Children on board",
        "occupancy ล่าสุดต่อช่วง · Head count per interval.",
        agg="last", draw="line",
    )
    return feed_dashboard(
        "school-bus", "bus", m, "รถรับส่งนักเรียน", "School buses",
        "ตำแหน่งและความเร็ว การขับเร็วเกินกำหนด และเด็กติดในรถ · Positions and speed, speeding and "
        "child-left-behind alerts.",
        [positions, speeding_now, speed, over, speeding, child, left, occupancy],
        refresh="30s",
    )


INSTANCE = 'instance=~"$instance"'


def collector_stat(agg: str, metric: str, title_th: str, title_en: str, description: str,
                   **options: Unpack[StatOptions]) -> Json:
    """A stat of `agg(metric)` now, over the selected collector processes."""
    return stat(titled(title_th, title_en), description, [prom(f"{agg}({metric}{{{INSTANCE}}})", instant=True)],
                **options)


def quantile_targets(histogram: str, by: str = "") -> list[Json]:
    """p50 (ref A) and p99 (ref B) of a Prometheus histogram over 5 minutes, per label `by` when given."""
    labels = f"le, {by}" if by else "le"
    per = f" {{{{{by}}}}}" if by else ""
    return [
        prom(f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket{{{INSTANCE}}}[5m])))", ref,
             legend=f"{name}{per}")
        for q, ref, name in ((0.5, "A", "p50"), (0.99, "B", "p99"))
    ]


def hourly_counts(counter: str, labels: tuple[str, str], title_th: str, title_en: str, description: str) -> Json:
    """Stacked bars of a counter's increase per hour, one series per pair of label values."""
    by = ", ".join(labels)
    return timeseries(
        titled(title_th, title_en), description,
        [prom(f"sum by ({by}) (increase({counter}{{{INSTANCE}}}[1h]))",
              legend=" ".join(f"{{{{{label}}}}}" for label in labels))],
        draw="bars", stack=True,
    )


def pipeline_health() -> Json:
    panels = [
        collector_stat(
            "min", "nakhon_mqtt_connected", "การเชื่อมต่อ MQTT", "Broker connection",
            "1 = เชื่อมต่ออยู่ · 1 while the collector is connected to the broker (nakhon_mqtt_connected).",
            thresholds=steps("red", (1, "green")),
            mappings=[{"type": "value", "options": {"0": {"text": "ขาดการเชื่อมต่อ · disconnected", "color": "red"},
                                                    "1": {"text": "เชื่อมต่อ · connected", "color": "green"}}}],
        ),
        collector_stat(
            "min", "nakhon_sink_up", "ฐานข้อมูลพร้อม", "Sink up",
            "1 เมื่อ InfluxDB ตอบการเขียนครั้งล่าสุด · 1 when the sink answered its last write (nakhon_sink_up).",
            thresholds=steps("red", (1, "green")),
        ),
        collector_stat(
            "sum", "nakhon_spool_depth_points", "ข้อมูลค้างในสปูล", "Spool depth",
            "จุดข้อมูลที่รอเขียนลงฐานข้อมูล · Points waiting in the disk spool (nakhon_spool_depth_points).",
            thresholds=steps("green", (1, "orange"), (100000, "red")),
        ),
        collector_stat(
            "max", "nakhon_spool_full", "สปูลเต็ม", "Spool full",
            "1 = สปูลเต็ม ข้อความค้างที่โบรกเกอร์ · 1 when the spool hit its limit (nakhon_spool_full).",
            thresholds=steps("green", (1, "red")),
        ),
        timeseries(
            titled("อัตราการรับข้อมูล", "Ingest rate"),
            "ข้อความที่รับ และจุดที่บันทึกต่อวินาที แยกตามประเภท · Messages received and points stored per second.",
            [
                prom(f"sum by (feed) (rate(nakhon_messages_received_total{{{INSTANCE}}}[1m]))", "A",
                     legend="received {{feed}}"),
                prom(f"sum by (feed) (rate(nakhon_points_stored_total{{{INSTANCE}}}[1m]))", "B",
                     legend="stored {{feed}}"),
            ],
            unit="reqps",
        ),
        timeseries(
            titled("อัตราการกักกันข้อความ", "Quarantine rate by reason"),
            "ข้อความที่ถูกปฏิเสธต่อวินาที ตามเหตุผล · Rejected messages per second by reason "
            "(nakhon_messages_quarantined_total).",
            [prom(f"sum by (reason) (rate(nakhon_messages_quarantined_total{{{INSTANCE}}}[5m]))",
                  legend="{{reason}}")],
            unit="reqps",
        ),
        timeseries(
            titled("เวลาเขียนฐานข้อมูล", "Write latency"),
            "p50 / p99 ของเวลาเขียนหนึ่งชุด · p50 and p99 of one batch write (nakhon_sink_write_seconds).",
            quantile_targets("nakhon_sink_write_seconds", by="sink"),
            unit="s",
        ),
        timeseries(
            titled("เวลาจนข้อมูลถูกบันทึก", "Receipt to durable (ack delay)"),
            "p50 / p99 จากรับข้อความถึงตอบรับ (PUBACK) หลังบันทึกข้อมูลแล้ว · p50 and p99 from receipt to the PUBACK "
            "sent once the data is durable (nakhon_ack_delay_seconds).",
            quantile_targets("nakhon_ack_delay_seconds"),
            unit="s",
        ),
        timeseries(
            titled("สปูลและข้อความค้าง", "Spool and pending messages"),
            "จุดในสปูล และข้อความที่ยังไม่ได้ตอบรับโบรกเกอร์ · Spooled points and messages not yet acknowledged.",
            [
                prom(f"sum(nakhon_spool_depth_points{{{INSTANCE}}})", "A", legend="spool points"),
                prom(f"sum(nakhon_pending_messages{{{INSTANCE}}})", "B", legend="pending messages"),
            ],
        ),
        timeseries(
            titled("การเชื่อมต่อตามเวลา", "Broker connection over time"),
            "nakhon_mqtt_connected รายโปรเซส · Per collector process.",
            [prom(f"nakhon_mqtt_connected{{{INSTANCE}}}", legend="{{instance}}")],
            thresholds=steps("red", (1, "green")),
            draw="line",
        ),
        hourly_counts(
            "nakhon_notifications_total", ("receiver", "outcome"), "ผลการส่งการแจ้งเตือน", "Notification outcomes",
            "การส่งต่อผู้รับแต่ละช่องทาง: sent, failed, retried · Deliveries per receiver and outcome "
            "(nakhon_notifications_total).",
        ),
        hourly_counts(
            "nakhon_alerts_state_changes_total", ("rule", "state"), "การเปลี่ยนสถานะการแจ้งเตือน", "Alert state changes",
            "ตามกฎและสถานะใหม่ · By rule and new state (nakhon_alerts_state_changes_total).",
        ),
    ]
    instances = "label_values(nakhon_mqtt_connected, instance)"
    instance = query_variable("instance", "โปรเซส · Instance", PROM, {"query": instances, "refId": "instance"},
                              instances)
    return dashboard(
        "nakhon-pipeline-health",
        titled("สุขภาพระบบรับข้อมูล", "Pipeline health"),
        "อัตรารับข้อมูล การกักกัน สปูล เวลาเขียน การเชื่อมต่อโบรกเกอร์ และการแจ้งเตือน (Prometheus) · "
        "Ingest, quarantine, spool, write latency, broker connection and notifications.",
        panels,
        variables=[instance],
        annotations=[],
        refresh="30s",
        time_from="now-3h",
    )


DASHBOARDS: dict[str, Callable[[], Json]] = {
    "city-overview": city_overview,
    "air-quality": air_quality,
    "flood": flood,
    "energy": energy,
    "school-bus": school_bus,
    "pipeline-health": pipeline_health,
}


def render(board: Json) -> str:
    return json.dumps(board, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def build(out_dir: Path = JSON_DIR) -> list[Path]:
    """Write every dashboard as `<name>.json` into `out_dir`; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in DASHBOARDS.items():
        path = out_dir / f"{name}.json"
        path.write_text(render(make()), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=JSON_DIR, help="output directory (default: dashboards/json)")
    args = parser.parse_args(argv)
    for path in build(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
