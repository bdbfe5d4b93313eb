"""`bind`: a rule's conditions resolved for one device must judge every reading exactly as `evaluate` does.

The engine evaluates readings with bound conditions (thresholds looked up once per device, no dispatch on the
condition's kind per reading). These tests try to make the two disagree: odd field values (bools, strings, nan,
infinity, missing fields, tags), thresholds from every source, nested all / any / not, rates over a history;
and a device changed in the registry, whose old thresholds must not outlive the change."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.model import DeviceInfo
from rules.conditions import Context, DeviceMemory, bind, evaluate, history_windows, remember
from rules.engine import RulesEngine
from rules.model import Rule, RuleSet, ThresholdConfig
from tests.rules.conftest import T0, PointSink, device, minutes, reading

FIELDS = ("a", "b", "tou")
OPS = (">", ">=", "<", "<=", "==", "!=")
THRESHOLDS = ThresholdConfig.model_validate({
    "city": {"chiangmai": {"p_city": 40.0}},
    "district": {"chiangmai": {"mueang": {"p_district": 45.0}}},
    "profile": {"gauge-x": {"p_profile": 50.0}},
})

field_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-100, 100),
    st.booleans(),
    st.sampled_from(["on_peak", "off_peak", ""]),
    st.none(),
)
threshold_refs = st.fixed_dictionaries(
    {},
    optional={
        "param": st.sampled_from(["p_city", "p_district", "p_profile", "p_device", "p_none"]),
        "site": st.sampled_from(["bank", "nothing", "label"]),
        "field": st.sampled_from(FIELDS),
        "default": st.floats(-50, 50, allow_nan=False),
        "scale": st.sampled_from([1.0, 0.5, 100.0]),
    },
).filter(lambda d: any(k in d for k in ("param", "site", "field", "default")))
operands = st.one_of(st.floats(-60, 60, allow_nan=False), st.integers(-60, 60), st.booleans(),
                     st.sampled_from(["on_peak", "off_peak"]), threshold_refs)
compares = st.builds(lambda f, op, v: {"compare": {"field": f, "op": op, "value": v}},
                     st.sampled_from(FIELDS), st.sampled_from(OPS), operands)
ranges = st.builds(lambda f, lo, hi, inside: {"range": {"field": f, "min": lo, "max": hi, "inside": inside}},
                   st.sampled_from(FIELDS), st.one_of(st.none(), st.floats(-60, 0), threshold_refs),
                   st.one_of(st.floats(0, 60), threshold_refs), st.booleans())
rates = st.builds(lambda op, v, window: {"rate": {"field": "a", "window": window, "per": "1m", "op": op, "value": v}},
                  st.sampled_from(OPS), st.one_of(st.floats(-5, 5), threshold_refs), st.sampled_from(["5m", "20m"]))
conditions = st.recursive(
    st.one_of(compares, ranges, rates),
    lambda inner: st.one_of(
        st.builds(lambda cs: {"all": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda cs: {"any": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, inner),
    ),
    max_leaves=5,
)
devices = st.builds(
    lambda profile, p_device, site: device("gauge-1", "flood", profile=profile,
                                           thresholds={} if p_device is None else {"p_device": p_device}, site=site),
    st.sampled_from([None, "gauge-x"]),
    st.one_of(st.none(), st.floats(-30, 30)),
    st.sampled_from([{}, {"bank": 12.5}, {"bank": "high", "label": True}]),
)
readings = st.lists(
    st.tuples(st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=3),
              st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(["on_peak", "x"]), max_size=1)),
    min_size=1, max_size=12,
)


def _rule(when: dict[str, Any]) -> Rule:
    return Rule.model_validate({"name": "t", "feed": "flood", "summary_th": "x", "summary_en": "x", "when": when})


def _same(a: Any, b: Any) -> bool:
    return a.ok == b.ok and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in ((a.value, b.value), (a.threshold, b.threshold))
    )


@settings(max_examples=400, deadline=None)
@given(when=conditions, dev=devices, series=readings)
def test_a_bound_condition_judges_every_reading_as_evaluate_does(when: dict[str, Any], dev: DeviceInfo,
                                                                   series: list[Any]) -> None:
    """Tries: a value `evaluate` treats specially (bool, str, nan, inf, a missing field read from the tags, an
    unresolved threshold, a threshold from another field) taking the bound fast path the wrong way."""
    rule = _rule(when)
    windows = history_windows(RuleSet(rules=[rule]))
    bound = bind(rule.when, dev, THRESHOLDS)
    memory = DeviceMemory()
    for i, (fields, tags) in enumerate(series):
        r = reading(dev, T0 + minutes(i), tags=tags, **fields)
        remember(memory, r, windows)
        ctx = Context(r, dev, THRESHOLDS, memory)
        expected, got = evaluate(rule.when, ctx), bound(ctx)
        assert _same(got, expected), (when, fields, tags, got, expected)


def _over(limit_param: str = "level_limit") -> Rule:
    return Rule.model_validate({
        "name": "level_over", "feed": "flood", "summary_th": "x", "summary_en": "x", "severity": "warning",
        "when": {"compare": {"field": "level_m", "op": ">", "value": {"param": limit_param, "default": 5.0}}},
    })


async def test_a_device_changed_in_the_registry_is_judged_by_its_new_threshold(store, clock, sink: PointSink) -> None:
    """Tries: the threshold bound for the device as first seen outliving a change of its per-device override
    (the directory hands the engine a new DeviceInfo)."""
    eng = RulesEngine([_over()], store, None, sink, clock=clock)
    dev = device("gauge-7", "flood")
    await eng.process(reading(dev, T0, level_m=6.0), dev)  # default limit 5.0: over
    assert eng.open_alert("level_over", "gauge-7") is not None
    raised = dataclasses.replace(dev, thresholds={"level_limit": 8.0})
    await eng.process(reading(raised, T0 + minutes(1), level_m=6.5), raised)  # 6.5 <= 8.0: cleared
    assert eng.open_alert("level_over", "gauge-7") is None
    await eng.process(reading(raised, T0 + minutes(2), level_m=7.0), raised)
    assert eng.open_alert("level_over", "gauge-7") is None  # still under the new limit
    await eng.process(reading(raised, T0 + minutes(3), level_m=8.5), raised)
    alert = eng.open_alert("level_over", "gauge-7")
    assert alert is not None and alert.threshold == 8.0


async def test_a_device_moved_to_another_district_gets_the_rules_of_its_new_place(store, clock,
                                                                                   sink: PointSink) -> None:
    """Tries: the rules matched for the device's first district still applying after it moved."""
    rule = Rule.model_validate({
        "name": "mueang_only", "feed": "flood", "summary_th": "x", "summary_en": "x", "severity": "warning",
        "match": {"districts": ["mueang"]},
        "when": {"compare": {"field": "level_m", "op": ">", "value": 5.0}},
    })
    eng = RulesEngine([rule], store, None, sink, clock=clock)
    moved = device("gauge-8", "flood", district="hang_dong")
    await eng.process(reading(moved, T0, level_m=9.0), moved)
    assert eng.open_alert("mueang_only", "gauge-8") is None
    back = dataclasses.replace(moved, district="mueang")
    await eng.process(reading(back, T0 + minutes(1), level_m=9.0), back)
    assert eng.open_alert("mueang_only", "gauge-8") is not None
