from __future__ import annotations

from pathlib import Path

import pytest

from rules.check import check_rules_dir, load_rules_dir
from rules.notify.routing import parse_routing
from rules.timeutil import parse_duration
from rules.yamlload import RuleLoadError

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


def _rule(feed: str, when: str, summary_th: str = "x", summary_en: str = "x", extra: str = "") -> str:
    return (
        f"rules:\n  - name: r1\n    feed: {feed}\n    when:\n      {when}\n"
        f"    summary_th: {summary_th!r}\n    summary_en: {summary_en!r}\n{extra}"
    )


def _errors(tmp_path: Path, text: str) -> list[str]:
    write(tmp_path, "r.yaml", text)
    return [str(e) for e in check_rules_dir(tmp_path)]


def test_a_field_no_feed_has_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    # `field: pm25` on an air rule was "ok" and could never fire
    errors = _errors(tmp_path, _rule("air", 'compare: {field: pm25, op: ">", value: 50}'))
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / 'r.yaml'}:5: ")
    assert "'pm25' is not a field of the air feed (did you mean pm25_ugm3?)" in errors[0]
    # a derived field is known; a field of another feed is not; a tag of its own feed is
    assert _errors(tmp_path, _rule("air", 'compare: {field: aqi_th_band, op: ">=", value: 4}')) == []
    assert (
        "not a field of the air feed"
        in _errors(tmp_path, _rule("air", 'compare: {field: level_m, op: ">", value: 1}'))[0]
    )
    assert _errors(tmp_path, _rule("energy", "compare: {field: tou, op: '==', value: on_peak}")) == []
    nested = _rule(
        "bus",
        "all: [{compare: {field: ignition, op: '==', value: false}},"
        " {rate: {field: speedkmh, window: 5m, op: '>', value: 1}}]",
    )
    assert any("'speedkmh'" in e and "did you mean speed_kmh?" in e for e in _errors(tmp_path, nested))
    ref = _rule("bus", "compare: {field: speed_kmh, op: '>', value: {field: speed_limit, default: 60}}")
    assert any("'speed_limit'" in e and "speed_limit_kmh" in e for e in _errors(tmp_path, ref))


def test_thresholds_outside_the_field_range_and_wrong_types_are_refused(tmp_path: Path) -> None:
    assert (
        "outside the range of humidity_pct (0–100)"
        in _errors(tmp_path, _rule("air", "compare: {field: humidity_pct, op: '>', value: 120}"))[0]
    )
    assert (
        "outside the range of power_factor"
        in _errors(
            tmp_path, _rule("energy", "compare: {field: power_factor, op: '<', value: {param: pf_min, default: 85}}")
        )[0]
    )
    assert (
        "outside the range of occupancy"
        in _errors(tmp_path, _rule("bus", "range: {field: occupancy, min: -1, max: 10}"))[0]
    )
    assert "ignition is bool" in _errors(tmp_path, _rule("bus", "compare: {field: ignition, op: '>', value: 0}"))[0]
    assert (
        "did you mean on_peak?"
        in _errors(tmp_path, _rule("energy", "compare: {field: tou, op: '==', value: on_peek}"))[0]
    )


def test_template_typos_unknown_filters_and_units_are_refused(tmp_path: Path) -> None:
    cases = {
        "{{ valeu | num }}": "unknown variable 'valeu' (did you mean value?)",
        "{{ device.nmae }}": "device has no 'nmae' (did you mean name?)",
        "{{ value | nmu }}": "unknown filter 'nmu' (did you mean num?)",
        "{{ fields.pm25 }}": "fields.pm25 is not a field of the air feed (did you mean pm25_ugm3?)",
        "{{ opened.fields.pm25_ugm }}": "fields.pm25_ugm is not a field of the air feed (did you mean pm25_ugm3?)",
        "{{ value | qty('ugm') }}": "unknown unit 'ugm' in qty (did you mean ugm3?)",
        "{{ silent_for | duration }}": "unknown variable 'silent_for' (only heartbeat rules have it)",
        "{{ value is numbr }}": "unknown test 'numbr' (did you mean number?)",
    }
    for template, expected in cases.items():
        errors = _errors(tmp_path, _rule("air", "compare: {field: aqi_th, op: '>', value: 100}", summary_en=template))
        assert len(errors) == 1 and expected in errors[0] and ":7: " in errors[0], (template, errors)
    ok = (
        "{{ device.name }} {{ value | qty('ugm3') }} {{ fields.pm25_ugm3 | num }}"
        " {{ opened.time | en_time }} {{ for | duration }}"
    )
    assert _errors(tmp_path, _rule("air", "compare: {field: aqi_th, op: '>', value: 100}", summary_en=ok)) == []
    absent = (
        "rules:\n  - name: r1\n    feed: air\n    when: {absent: {default: 1h}}\n"
        "    summary_th: '{{ silent_for | duration }} {{ heartbeat | duration }}'\n    summary_en: x\n"
    )
    assert _errors(tmp_path, absent) == []


def test_cli_check_refuses_what_cannot_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rules.cli import rules_app

    write(tmp_path, "r.yaml", _rule("air", 'compare: {field: pm25, op: ">", value: 50}'))
    out = CliRunner().invoke(rules_app, ["check", str(tmp_path)])
    assert out.exit_code == 1 and "r.yaml:5:" in out.output and "did you mean pm25_ugm3?" in out.output


def test_a_thresholds_value_outside_the_field_range_is_refused(tmp_path: Path) -> None:
    text = (
        "thresholds:\n  city: {laem-chabang: {pf_min: 85}}\n"
        + _rule("energy", "compare: {field: power_factor, op: '<', value: {param: pf_min, default: 0.85}}")
    )
    errors = _errors(tmp_path, text)
    assert len(errors) == 1 and ":2: " in errors[0] and "85 is outside the range of power_factor (0–1)" in errors[0]
