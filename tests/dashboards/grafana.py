"""What Grafana does with the dashboard JSON, for the tests: list every query and expand its macros.

Expansion follows Grafana's InfluxQL, PostgreSQL and Prometheus datasources:
`$timeFilter` → `time >= now() - 6h`, `$__interval` → `1m`, `$__interval_ms` → `60000`; a multi-value
variable in `${var:regex}` → `(v1|v2)` with each value regex-escaped (Grafana's `regexEscape`), one value →
the escaped value, "All" with a custom all value → that value unformatted (`.*`); `${var:sqlstring}` →
`'v1','v2'`; a Prometheus variable as Grafana's `prometheusSpecialRegexEscape` does (`127\\.0\\.0\\.1`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON_DIR = Path(__file__).resolve().parents[2] / "dashboards" / "json"

TIME_FILTER = "time >= now() - 6h"
INTERVAL = "1m"
INTERVAL_MS = "60000"
ALL = object()  # the "All" selection of a variable


@dataclass(frozen=True)
class Query:
    dashboard: str  # file stem
    where: str  # panel title / variable name / annotation name, and refId
    kind: str  # "influxql" | "promql" | "sql"
    text: str
    role: str  # "panel" | "variable" | "annotation"

    @property
    def id(self) -> str:
        return f"{self.dashboard}:{self.where}"


def load_dashboards(directory: Path = JSON_DIR) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))}


def _kind(datasource: dict[str, Any] | None) -> str:
    uid = (datasource or {}).get("uid", "")
    return {"nakhon-influxdb": "influxql", "nakhon-prometheus": "promql", "nakhon-registry": "sql"}.get(uid, uid)


def queries(boards: dict[str, dict[str, Any]] | None = None) -> Iterator[Query]:
    """Every query of every dashboard: panel targets, template variables and annotations."""
    for name, board in (boards or load_dashboards()).items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                kind = _kind(target.get("datasource") or panel.get("datasource"))
                text = target.get("query") if kind == "influxql" else target.get("expr") or target.get("rawSql")
                yield Query(name, f"{panel['title']}/{target['refId']}", kind, text, "panel")
        for variable in board["templating"]["list"]:
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield Query(name, f"$${variable['name']}", _kind(variable["datasource"]), text, "variable")
        for annotation in board["annotations"]["list"]:
            if annotation.get("builtIn"):
                continue
            yield Query(name, f"annotation {annotation['name']}", _kind(annotation["datasource"]),
                        annotation["query"], "annotation")


def regex_escape(value: str) -> str:
    """Grafana's `regexEscape` (public/app/core/utils/kbn)."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def format_value(values: object, fmt: str) -> str:
    if values is ALL:
        return ".*"  # the variables' custom allValue, which Grafana leaves unformatted
    assert isinstance(values, list) and values, "a variable needs at least one value"
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt == "prometheus":  # Grafana's prometheusSpecialRegexEscape: the backslash doubled inside a PromQL string
        escaped = [re.sub(r"[$^*{}\[\]'+?.()|\\]", lambda m: "\\\\" + m.group(0), v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt in ("regex", "influx"):
        escaped = [regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    raise ValueError(f"unsupported variable format {fmt!r}")


_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def expand(text: str, kind: str, variables: dict[str, object]) -> str:
    """Grafana's macro and variable interpolation for one query."""
    out = text.replace("$timeFilter", TIME_FILTER).replace("$__interval_ms", INTERVAL_MS)
    out = out.replace("$__interval", INTERVAL)
    default_fmt = {"influxql": "regex", "promql": "prometheus", "sql": "sqlstring"}[kind]

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name not in variables:
            raise KeyError(f"query uses ${name}, which is not a template variable: {text}")
        return format_value(variables[name], match.group(2) or default_fmt)

    return _VAR.sub(replace, out)


# -- InfluxQL identifiers -----------------------------------------------------------------------------------------

_QUOTED = re.compile(r'"([^"]+)"')
_FROM = re.compile(r'\bFROM\s+((?:"[^"]+"\s*,\s*)*"[^"]+")', re.IGNORECASE)
_ALIAS = re.compile(r'\bAS\s+"([^"]+)"', re.IGNORECASE)
_FUNC_ARG = re.compile(r'\b\w+\(\s*"([^"]+)"')
_GROUP_BY = re.compile(r"\bGROUP BY\s+(.*?)(?:\bfill\(|\)|$)", re.IGNORECASE)
_WITH_KEY = re.compile(r'\bWITH KEY\s*=\s*"([^"]+)"', re.IGNORECASE)
_TAG_ALIAS = re.compile(r"\$tag_(\w+)")


@dataclass(frozen=True)
class Identifiers:
    measurements: tuple[str, ...]
    fields: frozenset[str]  # arguments of functions: must be fields
    tags: frozenset[str]  # GROUP BY and WITH KEY: must be tags
    other: frozenset[str]  # anything else quoted (SELECT columns, WHERE keys): field or tag
    aliases: frozenset[str]


def identifiers(query: str, alias: str = "") -> Identifiers:
    """The measurements, fields and tag keys an InfluxQL statement names (double-quoted identifiers)."""
    measurements = tuple(m for clause in _FROM.findall(query) for m in _QUOTED.findall(clause))
    aliases = frozenset(_ALIAS.findall(query))
    fields = frozenset(_FUNC_ARG.findall(query))
    without_time = re.sub(r"\btime\([^)]*\)", "time", query)
    tags = {t for clause in _GROUP_BY.findall(without_time) for t in _QUOTED.findall(clause)}
    tags |= set(_WITH_KEY.findall(query)) | set(_TAG_ALIAS.findall(alias))
    every = set(_QUOTED.findall(query))
    other = every - set(measurements) - aliases - fields - tags
    return Identifiers(measurements, fields, frozenset(tags), frozenset(other), aliases)
