"""What `rules check` refuses beyond the schema: a rule that cannot work as written.

- a condition or threshold `field` no reading of the rule's feed has (canonical, derived or tag; rules/fields.py);
- a comparison of a field with a value of the wrong type (`ignition > 0`, `tou == 1`), or with a number outside
  the field's range (`humidity_pct > 120` never fires);
- in `summary_th` / `summary_en`: a variable, attribute, field, filter, test or unit that does not exist
  (the Jinja2 AST is walked against the real context: rules/evidence.py, rules/notify/text.py).

Each problem is a `RuleError` with file, line and, where something close exists, "did you mean …?".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from rules.evidence import ABSENCE_NAMES, OBJECT_ATTRS, SUMMARY_NAMES
from rules.fields import FieldInfo, feed_fields
from rules.model import All, AnyOf, Compare, Geofence, Not, Range, Rate, Rule, ThresholdConfig, ThresholdRef
from rules.notify.text import UNITS
from rules.yamlload import Path, line_for

# Rule errors are made by the caller (rules/check.py) from (loc, message) pairs.
Problem = tuple[Path, str]


def suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _conditions(cond: Any, path: Path) -> Iterator[tuple[Any, Path]]:
    yield cond, path
    if isinstance(cond, All):
        for i, c in enumerate(cond.all):
            yield from _conditions(c, (*path, "all", i))
    elif isinstance(cond, AnyOf):
        for i, c in enumerate(cond.any):
            yield from _conditions(c, (*path, "any", i))
    elif isinstance(cond, Not):
        yield from _conditions(cond.not_, (*path, "not"))


def _unknown_field(feed: str, name: str, fields: dict[str, FieldInfo]) -> str:
    return f"field {name!r} is not a field of the {feed} feed{suggest(name, fields)}: the rule can never fire"


def _check_value(info: FieldInfo, op: str, value: Any, path: Path, feed: str) -> Iterator[Problem]:
    fields = feed_fields(feed)
    if isinstance(value, ThresholdRef):
        if value.field is not None and value.field not in fields:
            yield (*path, "field"), _unknown_field(feed, value.field, fields)
        if value.default is None:
            return
        value = value.default * value.scale
    if isinstance(value, bool) or info.kind == "bool":
        if info.kind != "bool" or not isinstance(value, bool):
            yield path, f"{info.name} is {info.kind}: compare it with {_example(info)}, not {value!r}"
        elif op not in ("==", "!="):
            yield path, f"{info.name} is true/false: use == or !=, not {op}"
        return
    if isinstance(value, str) or info.kind == "str":
        if info.kind != "str" or not isinstance(value, str):
            yield path, f"{info.name} is {info.kind}: compare it with {_example(info)}, not {value!r}"
        elif op not in ("==", "!="):
            yield path, f"{info.name} is text: use == or !=, not {op}"
        elif info.values and value not in info.values:
            yield (
                path,
                f"{info.name} is never {value!r}{suggest(value, info.values)}; it is one of {', '.join(info.values)}",
            )
        return
    yield from _check_range(info, float(value), path)


def _check_range(info: FieldInfo, number: float, path: Path) -> Iterator[Problem]:
    if (info.lo is not None and number < info.lo) or (info.hi is not None and number > info.hi):
        yield path, f"{number:g} is outside the range of {info.name} ({info.range_text()}): no reading can have it"


def _example(info: FieldInfo) -> str:
    return {"bool": "true or false", "str": "a text value", "int": "a whole number"}.get(info.kind, "a number")


def condition_problems(rule: Rule, path: Path) -> Iterator[Problem]:
    """Fields, value types and ranges of the rule's `when` and `clear`."""
    fields = feed_fields(rule.feed)
    for key, cond in (("when", rule.when), ("clear", rule.clear)):
        if cond is None:
            continue
        for node, where in _conditions(cond, (*path, key)):
            names: list[tuple[str, Path]] = []
            if isinstance(node, Compare | Range | Rate):
                spec = getattr(node, next(iter(type(node).model_fields)))
                kind = next(iter(type(node).model_fields))
                names.append((spec.field, (*where, kind, "field")))
            elif isinstance(node, Geofence):
                names += [
                    (node.geofence.lat_field, (*where, "geofence")),
                    (node.geofence.lon_field, (*where, "geofence")),
                ]
            for name, at in names:
                if name not in fields:
                    yield at, _unknown_field(rule.feed, name, fields)
            if isinstance(node, Compare) and node.compare.field in fields:
                info = fields[node.compare.field]
                yield from _check_value(
                    info, node.compare.op, node.compare.value, (*where, "compare", "value"), rule.feed
                )
            elif isinstance(node, Range) and node.range.field in fields:
                info = fields[node.range.field]
                if info.kind in ("bool", "str"):
                    yield (*where, "range", "field"), f"{info.name} is {info.kind}: a range needs a number field"
                    continue
                for bound in ("min", "max"):
                    v = getattr(node.range, bound)
                    if v is not None:
                        yield from _check_value(info, ">=", v, (*where, "range", bound), rule.feed)
            elif isinstance(node, Rate) and node.rate.field in fields:
                info = fields[node.rate.field]
                if info.kind in ("bool", "str"):
                    yield (*where, "rate", "field"), f"{info.name} is {info.kind}: a rate needs a number field"
                ref = node.rate.value
                if isinstance(ref, ThresholdRef) and ref.field is not None and ref.field not in fields:
                    yield (
                        (*where, "rate", "value", "field"),
                        _unknown_field(rule.feed, ref.field, fields),
                    )


# ---- templates ------------------------------------------------------------------------------------------------


def _template_env() -> SandboxedEnvironment:
    from rules.notify.render import Renderer

    return Renderer().envs["th"]


def template_problems(rule: Rule, path: Path, env: SandboxedEnvironment | None = None) -> Iterator[Problem]:
    """Every name, attribute, field, filter, test and unit a summary template uses must exist."""
    env = env or _template_env()
    fields = feed_fields(rule.feed)
    names = set(SUMMARY_NAMES) | (set(ABSENCE_NAMES) if rule.is_absence else set())
    for key in ("summary_th", "summary_en"):
        source = getattr(rule, key)
        at = (*path, key)
        try:
            ast = env.parse(source)
        except TemplateSyntaxError as exc:  # the model validator already refuses these; kept for direct callers
            yield at, f"{key}: invalid template: {exc.message}"
            continue
        assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
        for node in ast.find_all(nodes.Name):
            if node.ctx != "load" or node.name in assigned or node.name in env.globals:
                continue
            if node.name not in names:
                hint = ""
                if node.name in ABSENCE_NAMES:
                    hint = " (only heartbeat rules have it)"
                yield at, f"{key}: unknown variable {node.name!r}{hint or suggest(node.name, names)}"
        for flt in ast.find_all(nodes.Filter):
            if flt.name not in env.filters:
                yield at, f"{key}: unknown filter {flt.name!r}{suggest(flt.name, _public(env.filters))}"
            elif flt.name == "qty" and flt.args and isinstance(flt.args[0], nodes.Const):
                unit = flt.args[0].value
                if unit not in UNITS:
                    yield (
                        at,
                        f"{key}: unknown unit {unit!r} in qty{suggest(str(unit), UNITS)}; known: {', '.join(UNITS)}",
                    )
        for test in ast.find_all(nodes.Test):
            if test.name not in env.tests:
                yield at, f"{key}: unknown test {test.name!r}{suggest(test.name, env.tests)}"
        for base, attr in _lookups(ast):
            if base in OBJECT_ATTRS and attr not in OBJECT_ATTRS[base]:
                yield at, f"{key}: {base} has no {attr!r}{suggest(attr, OBJECT_ATTRS[base])}"
            elif base == "fields" and attr not in fields:
                yield at, f"{key}: fields.{attr} is not a field of the {rule.feed} feed{suggest(attr, fields)}"
            elif base == "tags" and (attr not in fields or fields[attr].source != "tag"):
                tags = [n for n, f in fields.items() if f.source == "tag"]
                yield at, f"{key}: tags.{attr} is not a tag of the {rule.feed} feed{suggest(attr, tags)}"


_FILTER_NOISE = frozenset({"safe", "forceescape", "xmlattr", "pprint", "attr", "map", "select", "reject"})


def _public(filters: dict[str, Any]) -> list[str]:
    return [name for name in filters if name not in _FILTER_NOISE]


def _lookups(ast: nodes.Node) -> Iterator[tuple[str, str]]:
    """(base, key) of `x.key` / `x['key']` where x is a context name, or `opened.fields.key` (base "fields")."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        key: Any = None
        if isinstance(node, nodes.Getattr):
            key = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            key = node.arg.value
        if not isinstance(key, str):
            continue
        target = node.node  # type: ignore[attr-defined]
        if isinstance(target, nodes.Name):
            yield target.name, key
        elif (
            isinstance(target, nodes.Getattr)
            and isinstance(target.node, nodes.Name)
            and target.node.name in ("opened", "latest")
            and target.attr in ("fields", "tags")
        ):
            yield target.attr, key


def threshold_problems(rule: Rule, thresholds: ThresholdConfig) -> Iterator[Problem]:
    """A `thresholds:` value (city / district / profile) for a parameter this rule compares a field with must be
    inside that field's range (`thresholds: {city: {x: {flood_high_pct: 7000}}}` would never fire)."""
    fields = feed_fields(rule.feed)
    params: dict[str, FieldInfo] = {}
    for key in ("when", "clear"):
        cond = getattr(rule, key)
        for node, _where in _conditions(cond, ()) if cond is not None else ():
            if isinstance(node, Compare) and isinstance(node.compare.value, ThresholdRef):
                ref = node.compare.value
                if ref.param is not None and node.compare.field in fields:
                    params[ref.param] = fields[node.compare.field]
    tables: list[tuple[Path, dict[str, float]]] = [(("thresholds", "city", c), t) for c, t in thresholds.city.items()]
    tables += [(("thresholds", "profile", p), t) for p, t in thresholds.profile.items()]
    tables += [
        (("thresholds", "district", c, d), t) for c, ds in thresholds.district.items() for d, t in ds.items()
    ]
    for where, table in tables:
        for param, value in table.items():
            info = params.get(param)
            if info is not None and info.kind in ("number", "int"):
                yield from _check_range(info, float(value), (*where, param))


def rule_problems(
    rule: Rule, index: int, lines: dict[Path, int], thresholds: ThresholdConfig | None = None
) -> list[tuple[int | None, str]]:
    """(line, message) of every problem of rule number `index` of a file (and of the file's `thresholds:`)."""
    path: Path = ("rules", index)
    found = list(condition_problems(rule, path)) + list(template_problems(rule, path))
    if thresholds is not None:
        found += [(loc, f"thresholds for {message}") for loc, message in threshold_problems(rule, thresholds)]
    return [(line_for(lines, loc), f"rule {rule.name}: {message}") for loc, message in found]
