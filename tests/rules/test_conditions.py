from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.time import NS
from rules.conditions import (
    RATE_SAMPLE_STEPS,
    Context,
    DeviceMemory,
    evaluate,
    history_windows,
    in_schedule,
    remember,
    resolve_threshold,
)
from rules.model import Rule, RuleSet, ScheduleSpec, ThresholdConfig, ThresholdRef
from tests.rules.conftest import T0, bkk, device, minutes, reading


def rule(when: dict[str, Any], feed: str = "air", **kw: Any) -> Rule:
    return Rule.model_validate(
        {"name": "t", "feed": feed, "summary_th": "x", "summary_en": "x", "when": when, **kw},
        context={"base_dir": kw.pop("base_dir", ".")},
    )


def ev(
    when: dict[str, Any],
    fields: dict[str, Any],
    *,
    dev: Any = None,
    t: int = T0,
    mem: DeviceMemory | None = None,
    thresholds: ThresholdConfig | None = None,
    tags: dict[str, str] | None = None,
    base_dir: str = ".",
) -> Any:
    r = Rule.model_validate(
        {"name": "t", "feed": "air", "summary_th": "x", "summary_en": "x", "when": when},
        context={"base_dir": base_dir},
    )
    dev = dev or device()
    rd = reading(dev, t, tags, **fields)
    mem = mem or DeviceMemory()
    remember(mem, rd, history_windows(RuleSet(rules=[r])))
    return evaluate(r.when, Context(rd, dev, thresholds or ThresholdConfig(), mem))


@pytest.mark.parametrize(
    ("op", "value", "field", "expect"),
    [
        (">=", 101, 101, True),
        (">", 101, 101, False),
        ("<", 0.85, 0.8, True),
        ("==", False, False, True),
        ("==", "on_peak", "on_peak", True),
        ("!=", "on_peak", "off_peak", True),
        (">", 1, None, None),  # missing field: unknown
        (">", 1, "text", None),  # no ordering of text and numbers
    ],
)
def test_compare(op: str, value: Any, field: Any, expect: bool | None) -> None:
    fields = {} if field is None else {"x": field}
    assert ev({"compare": {"field": "x", "op": op, "value": value}}, fields).ok is expect


def test_compare_reads_tags_too() -> None:
    when = {"compare": {"field": "tou", "op": "==", "value": "on_peak"}}
    assert ev(when, {}, tags={"tou": "on_peak"}).ok is True
    assert ev(when, {}, tags={"tou": "off_peak"}).ok is False


def test_range_inside_and_outside() -> None:
    inside = {"range": {"field": "voltage_v", "min": 207, "max": 253}}
    outside = {"range": {"field": "voltage_v", "min": 207, "max": 253, "inside": False}}
    assert ev(inside, {"voltage_v": 230}).ok is True
    assert ev(outside, {"voltage_v": 230}).ok is False
    assert ev(outside, {"voltage_v": 260}).ok is True
    assert ev(outside, {"voltage_v": 200}).ok is True


def test_threshold_resolution_order() -> None:
    ref = ThresholdRef(param="p", site="s", default=1)
    cfg = ThresholdConfig(
        city={"chiangmai": {"p": 5}},
        district={"chiangmai": {"mueang": {"p": 4}}},
        profile={"prof": {"p": 3}},
    )
    base: dict[str, Any] = {"city": "chiangmai", "district": "mueang"}
    assert resolve_threshold(ref, device(**base), ThresholdConfig()) == 1  # rule default
    assert resolve_threshold(ref, device(**base), ThresholdConfig(city=cfg.city)) == 5  # city
    assert resolve_threshold(ref, device(**base), ThresholdConfig(city=cfg.city, district=cfg.district)) == 4
    assert resolve_threshold(ref, device(profile="prof", **base), cfg) == 3  # profile beats district
    assert resolve_threshold(ref, device(profile="prof", site={"s": 2.5}, **base), cfg) == 2.5  # the site
    dev = device(profile="prof", site={"s": 2.5}, thresholds={"p": 2}, **base)
    assert resolve_threshold(ref, dev, cfg) == 2  # device beats everything
    assert resolve_threshold(ThresholdRef(param="p"), device(city="other", district="x"), cfg) is None
    assert resolve_threshold(ThresholdRef(default=70, scale=0.5), device(), cfg) == 35


def test_threshold_from_another_field_and_site() -> None:
    when = {
        "compare": {
            "field": "speed_kmh",
            "op": ">",
            "value": {"field": "speed_limit_kmh", "site": "speed_limit_kmh", "default": 60},
        }
    }
    assert ev(when, {"speed_kmh": 55, "speed_limit_kmh": 50}).ok is True
    assert ev(when, {"speed_kmh": 65}, dev=device(site={"speed_limit_kmh": 70})).ok is False
    assert ev(when, {"speed_kmh": 65}).ok is True  # default 60
    r = ev(when, {"speed_kmh": 65})
    assert (r.value, r.threshold) == (65.0, 60.0)


def test_rate_of_change_over_window() -> None:
    when = {"rate": {"field": "level_m", "window": "30m", "per": "10m", "op": ">", "value": 0.1}}
    mem = DeviceMemory()
    assert ev(when, {"level_m": 1.0}, mem=mem, t=T0).ok is None  # one sample: unknown
    assert ev(when, {"level_m": 1.05}, mem=mem, t=T0 + minutes(5)).ok is None  # span < window/2
    r = ev(when, {"level_m": 1.5}, mem=mem, t=T0 + minutes(20))
    assert r.ok is True and r.value == pytest.approx(0.25)  # 0.5 m in 20 min = 0.25 m / 10 min
    # later the window slides past the rise: level flat for 30 min -> rate 0
    ev(when, {"level_m": 1.5}, mem=mem, t=T0 + minutes(40))
    r = ev(when, {"level_m": 1.5}, mem=mem, t=T0 + minutes(55))
    assert r.ok is False and r.value == pytest.approx(0.0)


def test_a_gauge_reporting_every_second_keeps_a_bounded_series_and_the_right_rate() -> None:
    """Two hours of one reading per second (or a backlog drained at once) must not keep 1,800 samples per 30 min
    window per device: the series stays bounded, and the rate of a steady rise is still exact."""
    when = {"rate": {"field": "level_m", "window": "30m", "per": "10m", "op": ">", "value": 0.1}}
    mem = DeviceMemory()
    r = None
    for s in range(2 * 3600):
        level = 1.0 + 0.012 * s / 60  # 0.012 m per minute = 0.12 m per 10 min
        r = ev(when, {"level_m": level}, mem=mem, t=T0 + s * NS)
        assert len(mem.history["level_m"]) <= RATE_SAMPLE_STEPS + 3
    assert r is not None and r.ok is True and r.value == pytest.approx(0.12)
    # then flat: within one window the rate falls to 0 and clears
    for s in range(2 * 3600, 2 * 3600 + 1900):
        r = ev(when, {"level_m": 2.44}, mem=mem, t=T0 + s * NS)
    assert r is not None and r.ok is False and r.value == pytest.approx(0.0)


def test_geofence_inside_outside_dwell(tmp_path: Path) -> None:
    square = {
        "type": "Polygon",
        "coordinates": [[[100.0, 13.0], [100.1, 13.0], [100.1, 13.1], [100.0, 13.1], [100.0, 13.0]]],
    }
    (tmp_path / "zones.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {"name": "โรงเรียนวัดเจดีย์"}, "geometry": square}],
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    inside = {"lat": 13.05, "lon": 100.05}
    outside = {"lat": 13.5, "lon": 100.05}
    zone = {"zones": "zones.geojson", "name": "โรงเรียนวัดเจดีย์"}
    assert ev({"geofence": {**zone, "mode": "inside"}}, inside, base_dir=str(tmp_path)).ok is True
    assert ev({"geofence": {**zone, "mode": "inside"}}, outside, base_dir=str(tmp_path)).ok is False
    assert ev({"geofence": {"geometry": square, "mode": "outside"}}, outside).ok is True
    assert ev({"geofence": {"geometry": square, "mode": "outside"}}, {}).ok is None  # no position

    r = Rule.model_validate(
        {
            "name": "d",
            "feed": "bus",
            "summary_th": "x",
            "summary_en": "x",
            "when": {"geofence": {"geometry": square, "mode": "dwell", "dwell": "10m"}},
        }
    )
    mem = DeviceMemory()
    dev = device(feed="bus")

    def at(t: int, pos: dict[str, float]) -> bool | None:
        return evaluate(r.when, Context(reading(dev, t, **pos), dev, ThresholdConfig(), mem)).ok

    assert at(T0, inside) is False
    assert at(T0 + minutes(9), inside) is False
    assert at(T0 + minutes(10), inside) is True
    assert at(T0 + minutes(11), outside) is False
    assert at(T0 + minutes(12), inside) is False  # dwell restarts after leaving


def test_schedule_bangkok_weekdays_and_holidays() -> None:
    spec = ScheduleSpec.model_validate({"days": ["mon-fri"], "start": "09:00", "end": "22:00", "holidays": "exclude"})
    assert in_schedule(spec, bkk(2026, 1, 6, 9, 0))  # Tuesday 09:00 Bangkok (02:00 UTC)
    assert not in_schedule(spec, bkk(2026, 1, 6, 8, 59))
    assert not in_schedule(spec, bkk(2026, 1, 6, 22, 0))
    assert not in_schedule(spec, bkk(2026, 1, 10, 12, 0))  # Saturday
    assert not in_schedule(spec, bkk(2026, 4, 13, 12, 0))  # Monday, Songkran: a Thai public holiday
    only = ScheduleSpec.model_validate({"holidays": "only"})
    assert in_schedule(only, bkk(2026, 4, 13, 12, 0)) and not in_schedule(only, bkk(2026, 4, 20, 12, 0))


def test_schedule_across_midnight() -> None:
    spec = ScheduleSpec.model_validate({"days": ["fri"], "start": "22:00", "end": "06:00"})
    assert in_schedule(spec, bkk(2026, 1, 9, 23, 0))  # Friday night
    assert in_schedule(spec, bkk(2026, 1, 10, 5, 0))  # Saturday early morning still belongs to Friday's window
    assert not in_schedule(spec, bkk(2026, 1, 10, 23, 0))  # Saturday night


def test_all_any_not() -> None:
    both = {
        "all": [
            {"compare": {"field": "ignition", "op": "==", "value": False}},
            {"compare": {"field": "occupancy", "op": ">", "value": 0}},
        ]
    }
    assert ev(both, {"ignition": False, "occupancy": 2}).ok is True
    assert ev(both, {"ignition": True, "occupancy": 2}).ok is False
    assert ev(both, {"ignition": False}).ok is None
    either = {
        "any": [{"compare": {"field": "a", "op": ">", "value": 0}}, {"compare": {"field": "b", "op": ">", "value": 0}}]
    }
    assert ev(either, {"b": 1}).ok is True
    assert ev(either, {"a": 0, "b": 0}).ok is False
    assert ev({"not": {"compare": {"field": "a", "op": ">", "value": 0}}}, {"a": 0}).ok is True


def test_schedule_in_rule_is_evaluated_at_reading_time() -> None:
    when = {"all": [{"compare": {"field": "x", "op": ">", "value": 0}}, {"schedule": {"days": ["sat", "sun"]}}]}
    assert ev(when, {"x": 1}, t=bkk(2026, 1, 10, 0, 30)).ok is True  # Saturday 00:30 Bangkok = Friday UTC
    assert ev(when, {"x": 1}, t=bkk(2026, 1, 9, 23, 30)).ok is False
