from __future__ import annotations

from pathlib import Path

import pytest

from rules.check import RuleLoadError, check_rules_dir, load_rules_dir
from rules.notify.routing import parse_routing
from rules.timeutil import parse_duration

GOOD = """\
rules:
  - name: ok_rule
    feed: air
    summary_th: "ทดสอบ"
    summary_en: "test"
    when:
      compare: {field: aqi_th, op: ">=", value: 101}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_defaults_are_valid() -> None:
    assert check_rules_dir(Path(__file__).parents[2] / "rules" / "defaults") == []
    names = {r.name for r in load_rules_dir().rules}
    assert {
        "air_aqi_th_unhealthy",
        "flood_level_high",
        "flood_level_overbank",
        "flood_rising_fast",
        "bus_over_speed",
        "bus_child_left",
        "energy_demand_over_contract",
        "energy_power_factor_low",
        "bus_device_silent",
    } <= names


def test_bad_operator_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    bad = write(
        tmp_path,
        "b.yaml",
        GOOD.replace("ok_rule", "other").replace('op: ">="', 'op: "=>"'),
    )
    errors = check_rules_dir(tmp_path)
    assert len(errors) == 1
    assert errors[0].file == str(bad)
    assert errors[0].line == 7  # the `compare:` line that holds op
    assert "op" in errors[0].message


def test_error_lines_point_at_the_offending_key(tmp_path: Path) -> None:
    text = """\
rules:
  - name: r1
    feed: air
    summary_th: x
    summary_en: x
    when:
      compare:
        field: aqi_th
        op: ">"
        value: 1
    for: soon
  - name: r2
    feed: trains
    summary_th: x
    summary_en: x
    when:
      bogus: {}
"""
    write(tmp_path, "r.yaml", text)
    errors = {e.line: e.message for e in check_rules_dir(tmp_path)}
    assert 11 in errors and "for" in errors[11] and "duration" in errors[11]
    assert 13 in errors and "feed" in errors[13]
    assert 17 in errors and "exactly one key" in errors[17]


def test_yaml_syntax_error_and_duplicate_names(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    write(tmp_path, "c.yaml", "rules:\n  - name: [unclosed\n")
    errors = check_rules_dir(tmp_path)
    by_file = {Path(e.file).name: e for e in errors}
    assert "duplicate rule name" in by_file["b.yaml"].message and by_file["b.yaml"].line == 2
    assert by_file["c.yaml"].line is not None and "YAML" in by_file["c.yaml"].message
    with pytest.raises(RuleLoadError) as exc:
        load_rules_dir(tmp_path)
    assert "b.yaml:2" in str(exc.value)


def test_absent_must_stand_alone_and_geofence_file_checked(tmp_path: Path) -> None:
    write(
        tmp_path,
        "x.yaml",
        """\
rules:
  - name: nested_absent
    feed: bus
    summary_th: x
    summary_en: x
    when:
      all:
        - absent: {default: 5m}
        - compare: {field: speed_kmh, op: ">", value: 1}
  - name: missing_zone
    feed: bus
    summary_th: x
    summary_en: x
    when:
      geofence: {zones: nowhere.geojson, mode: inside}
""",
    )
    errors = check_rules_dir(tmp_path)
    msgs = {e.line: e.message for e in errors}
    assert any("absent" in m for m in msgs.values())
    assert msgs.get(15) and "nowhere.geojson" in msgs[15]


def test_thresholds_config_is_merged(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD + "thresholds:\n  city: {chiangmai: {aqi_th_alert: 90}}\n")
    write(tmp_path, "b.yaml", "thresholds:\n  district: {chiangmai: {mueang: {aqi_th_alert: 80}}}\n")
    rs = load_rules_dir(tmp_path)
    assert rs.thresholds.city["chiangmai"]["aqi_th_alert"] == 90
    assert rs.thresholds.district["chiangmai"]["mueang"]["aqi_th_alert"] == 80


def test_routing_errors_name_line() -> None:
    text = "receivers:\n  - {name: a}\nroute:\n  receiver: a\n  group_wait: later\n"
    with pytest.raises(RuleLoadError) as exc:
        parse_routing(text, "routing.yaml")
    assert exc.value.errors[0].line == 5
    with pytest.raises(RuleLoadError, match="unknown receiver"):
        parse_routing("receivers: [{name: a}]\nroute: {receiver: b}\n")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), (90, 90), ("2d", 172800), ("0", 0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration() -> None:
    with pytest.raises(ValueError):
        parse_duration("5 minutes")
