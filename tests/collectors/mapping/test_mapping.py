"""Field mapping: renames, unit conversions (independent expected values), ultrasonic, sentinels, strings."""

from __future__ import annotations

from typing import Any

import pytest

from collectors.errors import RejectedMessage
from collectors.mapping import FieldMapper, Profile, builtin_profiles, parse_profile
from collectors.mapping.units import conversion
from core.model import DeviceRef, RawReading

MAPPER = FieldMapper()
P = builtin_profiles()


def raw(values: dict[str, Any], units: dict[str, str] | None = None) -> RawReading:
    return RawReading(DeviceRef(device_id="d1"), values, 1, units=units or {})


def mp(
    values: dict[str, Any],
    feed: str,
    profile: Profile | None = None,
    site: dict[str, Any] | None = None,
    units: dict[str, str] | None = None,
    calibration: dict[str, dict[str, float]] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    return MAPPER.map(raw(values, units), feed, profile, site or {}, calibration or {})


def profile(yaml_text: str) -> Profile:
    return parse_profile(yaml_text, "test")


# --- renames and passthrough ---


def test_no_profile_canonical_names_pass_through_unknown_noted() -> None:
    out, notes = mp({"pm25_ugm3": 12, "temperature_c": 30.5, "rssi": -80}, "air")
    assert out == {"pm25_ugm3": 12.0, "temperature_c": 30.5}
    assert type(out["pm25_ugm3"]) is float  # ints stored as float: InfluxDB field types never change
    assert notes == ["rssi: unknown key for feed 'air', dropped"]


def test_profile_renames_vendor_names() -> None:
    out, notes = mp(
        {"pm2_5": 41, "pm10": 60, "temperature": 31, "humidity": 70, "battery": 3.6}, "air", P["air-generic-lora"]
    )
    assert out == {"pm25_ugm3": 41.0, "pm10_ugm3": 60.0, "temperature_c": 31.0, "humidity_pct": 70.0}
    assert notes == []  # battery is in the profile's ignore list


def test_profile_reads_cayenne_names_from_tts_and_chirpstack() -> None:
    tts, _ = mp({"temperature_1": 27.2, "relative_humidity_2": 55.5}, "air", P["air-generic-lora"])
    cs, _ = mp({"temperatureSensor": {"1": 27.2}, "humiditySensor": {"2": 55.5}}, "air", P["air-generic-lora"])
    assert tts == cs == {"temperature_c": 27.2, "humidity_pct": 55.5}


# --- unit conversions, each against a value worked out by hand ---


@pytest.mark.parametrize(
    ("value", "unit", "field", "feed", "expected"),
    [
        (77, "°F", "temperature_c", "air", 25.0),  # (77 - 32) * 5/9
        (212, "degF", "temperature_c", "air", 100.0),
        (23.1, "Cel", "temperature_c", "air", 23.1),
        (55, "%RH", "humidity_pct", "air", 55.0),
        (12, "ug/m3", "pm25_ugm3", "air", 12.0),
        (0.035, "mg/m3", "pm25_ugm3", "air", 35.0),
        (120.1, "V", "voltage_v", "energy", 120.1),
        (1500, "mA", "current_a", "energy", 1.5),
        (2500, "W", "power_kw", "energy", 2.5),
        (1_234_500, "Wh", "energy_kwh", "energy", 1234.5),
        (7, "kWh", "energy_kwh", "energy", 7.0),
        (3420, "mm", "level_m", "flood", 3.42),
        (250, "cm", "level_m", "flood", 2.5),
        (1.5, "m", "level_m", "flood", 1.5),
        (10, "kn", "speed_kmh", "bus", 18.52),  # 1 knot = 1.852 km/h exactly
        (60, "km/h", "speed_kmh", "bus", 60.0),
        (10, "m/s", "speed_kmh", "bus", 36.0),
    ],
)
def test_senml_units_converted_for_canonical_names(
    value: float, unit: str, field: str, feed: str, expected: float
) -> None:
    out, notes = mp({field: value}, feed, units={field: unit})
    assert out[field] == pytest.approx(expected, rel=1e-12), notes


def test_profile_declared_unit_knots_to_kmh() -> None:
    out, _ = mp({"speed": 10, "course": 270.0, "latitude": 13.75, "longitude": 100.5}, "bus", P["bus-traccar-knots"])
    assert out == {"speed_kmh": pytest.approx(18.52), "heading_deg": 270.0, "lat": 13.75, "lon": 100.5}


def test_energy_profile_wh_to_kwh_and_w_to_kw() -> None:
    out, _ = mp({"energy": 15_234_700, "power": 12_400, "voltage": "229.8", "pf": 0.93}, "energy", P["energy-wh-meter"])
    assert out == {
        "energy_kwh": pytest.approx(15234.7),
        "power_kw": pytest.approx(12.4),
        "voltage_v": 229.8,
        "power_factor": 0.93,
    }


def test_energy_profile_keeps_999999() -> None:
    out, _ = mp({"energy": 999999}, "energy", P["energy-wh-meter"])
    assert out == {"energy_kwh": pytest.approx(999.999)}


def test_incompatible_senml_unit_rejects_the_reading_naming_both_units() -> None:
    with pytest.raises(RejectedMessage) as caught:
        mp({"temperature_c": 3}, "air", units={"temperature_c": "V"})
    assert caught.value.reason == "invalid_field"
    assert "'V'" in caught.value.detail and "'degC'" in caught.value.detail


def test_unknown_senml_unit_rejects_the_reading() -> None:
    with pytest.raises(RejectedMessage) as caught:
        mp({"temperature_c": 3}, "air", units={"temperature_c": "furlong-ish"})
    assert caught.value.reason == "invalid_field" and "furlong-ish" in caught.value.detail


def test_declared_unit_wins_over_the_profile_unit() -> None:
    out, _ = mp({"energy": 12.5}, "energy", P["energy-wh-meter"], units={"energy": "kWh"})
    assert out["energy_kwh"] == pytest.approx(12.5)


def test_conversion_pair_is_cached_affine() -> None:
    scale, offset = conversion("°F", "degC")
    assert scale == pytest.approx(5 / 9) and offset == pytest.approx(-160 / 9)


# --- ultrasonic ---


def test_ultrasonic_level_from_mounting_height() -> None:
    out, _ = mp({"distance": 1250, "battery": 88}, "flood", P["flood-ultrasonic-mm"], site={"mounting_height_m": 5.0})
    assert out == {"level_m": pytest.approx(3.75), "battery_pct": 88.0}  # 5.0 m - 1.25 m


def test_ultrasonic_without_mounting_height_is_dropped_with_note() -> None:
    out, notes = mp({"distance": 1250}, "flood", P["flood-ultrasonic-mm"])
    assert out == {}
    assert "mounting_height_m" in notes[0]


# --- sentinels and strings ---


def test_default_sentinels_dropped_with_notes() -> None:
    out, notes = mp(
        {"pm25_ugm3": -999, "pm10_ugm3": "N/A", "o3_ppb": "", "co_ppm": "-", "no2_ppb": 999999, "so2_ppb": 4}, "air"
    )
    assert out == {"so2_ppb": 4.0}
    assert len(notes) == 5 and all("sentinel" in n for n in notes)


def test_minus_one_is_a_reading_unless_configured() -> None:
    out, _ = mp({"temperature_c": -1}, "air")
    assert out == {"temperature_c": -1.0}


def test_air4thai_strings_and_sentinels() -> None:
    out, notes = mp(
        {"PM25": "38.5", "PM10": "-1", "O3": "-999", "CO": "0.52", "NO2": " 30 ", "SO2": "N/A", "stationID": "36t"},
        "air",
        P["air4thai-strings"],
    )
    assert out == {"pm25_ugm3": 38.5, "co_ppm": 0.52, "no2_ppb": 30.0}
    assert sorted(n.split(":")[0] for n in notes) == ["O3", "PM10", "SO2"]


def test_air4thai_nested_value_paths() -> None:
    out, notes = mp(
        {"AQILast": {"PM25": {"value": "21", "aqi": "40"}, "O3": {"value": "-1"}}}, "air", P["air4thai-strings"]
    )
    assert out == {"pm25_ugm3": 21.0}
    assert notes == ["AQILast.O3.value: sentinel '-1' means missing, dropped"]


def test_field_level_sentinel() -> None:
    prof = profile("feed: flood\nfields:\n  lvl: {to: level_m, sentinels: [0]}\n")
    assert mp({"lvl": 0}, "flood", prof)[0] == {}
    assert mp({"lvl": -999}, "flood", prof)[0] == {"level_m": -999.0}  # the field list replaces the defaults


def test_numbers_as_strings() -> None:
    out, notes = mp({"pm25_ugm3": "12.5", "pm10_ugm3": "1,234.5", "o3_ppb": "abc"}, "air")
    assert out == {"pm25_ugm3": 12.5, "pm10_ugm3": 1234.5}
    assert notes == ["o3_ppb: 'abc' is not a number, dropped"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, True),
        (0, False),
        ("on", True),
        ("off", False),
        ("ON", True),
        ("true", True),
        (True, True),
        ("open", True),
        ("closed", False),
    ],
)
def test_booleans_from_numbers_and_words(value: Any, expected: bool) -> None:
    out, _ = mp({"ignition": value, "door_open": value}, "bus")
    assert out == {"ignition": expected, "door_open": expected}


def test_bad_boolean_and_bool_for_number_dropped() -> None:
    out, notes = mp({"ignition": "maybe", "speed_kmh": True}, "bus")
    assert out == {} and len(notes) == 2


def test_occupancy_int() -> None:
    assert mp({"occupancy": "18"}, "bus")[0] == {"occupancy": 18}
    assert mp({"occupancy": 18.0}, "bus")[0] == {"occupancy": 18}
    assert mp({"occupancy": 2.5}, "bus")[0] == {}


def test_traccar_attributes_nested() -> None:
    out, notes = mp(
        {
            "latitude": 13.7,
            "longitude": 100.5,
            "speed": 0,
            "course": 0,
            "deviceId": 7,
            "attributes": {"ignition": False, "door": True, "passengers": 3, "motion": False},
        },
        "bus",
        P["bus-traccar-knots"],
    )
    assert out == {
        "lat": 13.7,
        "lon": 100.5,
        "speed_kmh": 0.0,
        "heading_deg": 0.0,
        "ignition": False,
        "door_open": True,
        "occupancy": 3,
    }
    assert notes == []


# --- scale/offset and calibration ---


def test_scale_offset_then_unit() -> None:
    prof = profile("feed: air\nfields:\n  t10: {to: temperature_c, scale: 0.1, unit: degF}\n")
    out, _ = mp({"t10": 770}, "air", prof)  # 770 * 0.1 = 77 °F = 25 °C
    assert out["temperature_c"] == pytest.approx(25.0)


def test_calibration_applied_last() -> None:
    out, _ = mp(
        {"distance": 1000},
        "flood",
        P["flood-ultrasonic-mm"],
        site={"mounting_height_m": 4.0},
        calibration={"level_m": {"scale": 1.0, "offset": -0.05}, "rain_mm": {"offset": 1}},
    )
    assert out == {"level_m": pytest.approx(2.95)}  # (4.0 - 1.0) - 0.05; rain_mm absent stays absent


def test_null_dropped_with_note() -> None:
    out, notes = mp({"pm25_ugm3": None}, "air")
    assert out == {} and notes == ["pm25_ugm3: null, dropped"]


def test_profile_for_other_feed_is_an_error() -> None:
    with pytest.raises(ValueError, match="feed 'flood'"):
        mp({"x": 1}, "air", P["flood-ultrasonic-mm"])
