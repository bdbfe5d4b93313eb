"""SenML (RFC 8428): base-field resolution on the RFC's own examples (section 5.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.errors import RejectedMessage
from collectors.formats import SenMLFormat

DATA = Path(__file__).parents[3] / "collectors" / "formats" / "senml" / "testdata"
RECEIVED = 1_700_000_000_000_000_000
NS = 1_000_000_000


def parse(name: str, fmt: SenMLFormat | None = None) -> list:
    return (fmt or SenMLFormat()).parse("senml/test", (DATA / name).read_bytes(), RECEIVED)


def test_5_1_1_single_datapoint_name_is_device_time_is_now() -> None:
    [r] = parse("rfc8428_5.1.1_single_datapoint.json")
    assert r.device.device_id == "urn:dev:ow:10e2073a01080063"
    assert r.values == {"Cel": 23.1} and r.units == {"Cel": "Cel"}
    assert r.time_ns == RECEIVED


def test_5_1_2_base_name_gives_device_with_separator_stripped() -> None:
    [r] = parse("rfc8428_5.1.2_multiple_datapoints.json")
    assert r.device.device_id == "urn:dev:ow:10e2073a01080063"
    assert r.values == {"voltage": 120.1, "current": 1.2}
    assert r.units == {"voltage": "V", "current": "A"}


def test_5_1_3_base_time_relative_times_and_base_unit() -> None:
    readings = parse("rfc8428_5.1.3_multiple_measurements.json")
    bt = 1276020076 * NS + 1_000_000  # 1.276020076001e+09 s, kept to the microsecond
    by_time = {r.time_ns: r for r in readings}
    assert len(readings) == 6  # one per instant: bt (voltage + last current) and bt-5 .. bt-1
    assert {r.device.device_id for r in readings} == {"urn:dev:ow:10e2073a0108006"}
    assert by_time[bt].values == {"voltage": 120.1, "current": 1.7}
    assert by_time[bt].units == {"voltage": "V", "current": "A"}  # current takes the base unit "A"
    assert by_time[bt - 5 * NS].values == {"current": 1.2}
    assert by_time[bt - 1 * NS].values == {"current": 1.6}


def test_5_1_4_records_without_names_are_told_apart_by_unit() -> None:
    readings = parse("rfc8428_5.1.4_multiple_measurements_units.json")
    bt = 1320067464 * NS
    by_time = {r.time_ns: r for r in readings}
    assert sorted(by_time) == [bt, bt + 60 * NS, bt + 120 * NS, bt + 150 * NS, bt + 180 * NS]
    assert by_time[bt].values == {"%RH": 20, "lon": 24.30621, "lat": 60.07965}
    assert by_time[bt + 150 * NS].values == {"%EL": 98}
    assert by_time[bt + 180 * NS].values == {"%RH": 21.2, "lon": 24.30628, "lat": 60.07967}


def test_5_1_6_boolean_string_and_data_values() -> None:
    [r] = parse("rfc8428_5.1.6_multiple_data_types.json")
    assert r.values == {"temp": 23.1, "label": "Machine Room", "open": False, "nfc-reader": "aGkgCg"}
    assert r.units == {"temp": "Cel"}


def test_5_1_7_two_base_names_two_devices_sharing_base_time() -> None:
    readings = parse("rfc8428_5.1.7_collection_of_resources.json")
    assert [(r.device.device_id, r.values) for r in readings] == [
        ("2001:db8::2", {"temperature": 25.2, "humidity": 30}),
        ("2001:db8::1", {"temperature": 12.3, "humidity": 67}),
    ]
    assert {r.time_ns for r in readings} == {1320078429 * NS}


def test_5_1_8_record_with_only_base_fields_is_skipped() -> None:
    [r] = parse("rfc8428_5.1.8_setting_an_actuator.json")
    assert r.values == {"temp": 23.1, "heat": 1, "fan": 0}
    assert r.units == {"temp": "Cel", "heat": "/", "fan": "/"}


def test_relative_time_is_relative_to_received_time() -> None:
    [r] = SenMLFormat().parse("senml/x", b'[{"bn":"dev1/","n":"t","v":1,"t":-30}]', RECEIVED)
    assert r.time_ns == RECEIVED - 30 * NS


def test_base_value_and_sum() -> None:
    [r] = SenMLFormat().parse("senml/x", b'[{"bn":"m1:","bv":100,"bs":5,"n":"e","v":2.5},{"n":"c","s":1}]', RECEIVED)
    assert r.values == {"e": 102.5, "c_sum": 6}


def test_strip_prefix() -> None:
    fmt = SenMLFormat(strip_prefix="urn:dev:ow:")
    [r] = parse("rfc8428_5.1.2_multiple_datapoints.json", fmt)
    assert r.device.device_id == "10e2073a01080063"


def test_lone_record_object_accepted() -> None:
    [r] = SenMLFormat().parse("senml/x", b'{"n":"urn:dev:mac:0024befffe804ff1","u":"Cel","v":30}', RECEIVED)
    assert r.device.device_id == "urn:dev:mac:0024befffe804ff1"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[", "bad_json"),
        (b'"x"', "bad_json"),
        (b"[1]", "bad_json"),
        (b'[{"bn":"d:","n":"a","v":"12"}]', "bad_json"),
        (b'[{"bn":"d:","bver":99,"n":"a","v":1}]', "bad_json"),
        (b"[]", "no_values"),
        (b'[{"bn":"d:"}]', "no_values"),
    ],
)
def test_rejects(payload: bytes, reason: str) -> None:
    with pytest.raises(RejectedMessage) as exc:
        SenMLFormat().parse("senml/x", payload, RECEIVED)
    assert exc.value.reason == reason


def test_topic_must_match_configured_filter() -> None:
    fmt = SenMLFormat(topic="sensors/+/senml")
    assert fmt.parse("sensors/a/senml", b'[{"n":"d","v":1}]', RECEIVED)
    with pytest.raises(RejectedMessage) as exc:
        fmt.parse("senml/a", b'[{"n":"d","v":1}]', RECEIVED)
    assert exc.value.reason == "bad_topic"
