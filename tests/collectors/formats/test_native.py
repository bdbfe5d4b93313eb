"""The native format: topic identity, the four time forms, rejects."""

from __future__ import annotations

import calendar
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.errors import RejectedMessage
from collectors.formats import NativeFormat, make_format
from collectors.formats._common import EPOCH_MS_MAX, EPOCH_S_MAX, time_to_ns

DATA = Path(__file__).parents[3] / "collectors" / "formats" / "native" / "testdata"
RECEIVED = 1_700_000_000_123_456_789
NS = 1_000_000_000


def utc_ns(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * NS


@pytest.fixture
def fmt() -> NativeFormat:
    return NativeFormat()


def test_topic_sets_city_feed_and_device(fmt: NativeFormat) -> None:
    [r] = fmt.parse("city/chiangmai/flood/gauge-p1", (DATA / "flood_rfc3339_bangkok.json").read_bytes(), RECEIVED)
    assert (r.topic_city, r.topic_feed, r.device.device_id, r.device.dev_eui) == (
        "chiangmai",
        "flood",
        "gauge-p1",
        None,
    )
    assert r.values == {"level_m": 3.42, "rain_mm": 12.5, "battery_pct": 87}


def test_rfc3339_with_bangkok_offset(fmt: NativeFormat) -> None:
    [r] = fmt.parse("city/cm/flood/g1", (DATA / "flood_rfc3339_bangkok.json").read_bytes(), RECEIVED)
    assert r.time_ns == utc_ns(2024, 5, 1, 10, 0, 0)  # 17:00 +07:00 is 10:00 UTC


def test_rfc3339_z_keeps_nanoseconds(fmt: NativeFormat) -> None:
    [r] = fmt.parse("city/cm/air/a1", b'{"ts":"2024-05-01T10:00:00.123456789Z","pm25_ugm3":1}', RECEIVED)
    assert r.time_ns == utc_ns(2024, 5, 1, 10) + 123_456_789


def test_epoch_seconds(fmt: NativeFormat) -> None:
    [r] = fmt.parse("city/bkk/air/a1", (DATA / "air_epoch_s.json").read_bytes(), RECEIVED)
    assert r.time_ns == 1714557600 * NS
    assert "ts" not in r.values


def test_epoch_seconds_float(fmt: NativeFormat) -> None:
    [r] = fmt.parse("city/bkk/air/a1", b'{"ts":1714557600.25,"pm25_ugm3":1}', RECEIVED)
    assert r.time_ns == 1714557600 * NS + 250_000_000


def test_epoch_milliseconds(fmt: NativeFormat) -> None:
    [r] = fmt.parse("city/bkk/energy/m1", (DATA / "energy_epoch_ms.json").read_bytes(), RECEIVED)
    assert r.time_ns == 1714557600123 * 1_000_000


def test_epoch_nanoseconds(fmt: NativeFormat) -> None:
    [r] = fmt.parse("city/bkk/energy/m1", b'{"ts":1714557600123456789,"power_kw":1}', RECEIVED)
    assert r.time_ns == 1714557600123456789


def test_missing_ts_is_received_time(fmt: NativeFormat) -> None:
    [r] = fmt.parse("city/bkk/bus/van-7", (DATA / "bus_no_ts.json").read_bytes(), RECEIVED)
    assert r.time_ns == RECEIVED
    assert r.values["ignition"] is True and r.values["occupancy"] == 18


def test_naive_rfc3339_rejected_with_reason(fmt: NativeFormat) -> None:
    with pytest.raises(RejectedMessage) as exc:
        fmt.parse("city/bkk/air/a1", b'{"ts":"2024-05-01T10:00:00","pm25_ugm3":1}', RECEIVED)
    assert exc.value.reason == "bad_time"
    assert "no UTC offset" in exc.value.detail
    assert exc.value.device_id == "a1"


@pytest.mark.parametrize("ts", ['"yesterday"', "-5", "true", '"2024-02-30T00:00:00Z"', "[1]"])
def test_bad_time(fmt: NativeFormat, ts: str) -> None:
    with pytest.raises(RejectedMessage) as exc:
        fmt.parse("city/bkk/air/a1", b'{"ts":' + ts.encode() + b',"pm25_ugm3":1}', RECEIVED)
    assert exc.value.reason == "bad_time"


def test_bad_json(fmt: NativeFormat) -> None:
    with pytest.raises(RejectedMessage) as exc:
        fmt.parse("city/bkk/air/a1", b'{"pm25_ugm3": ', RECEIVED)
    assert exc.value.reason == "bad_json"


def test_non_object_json_is_bad_json_with_clear_detail(fmt: NativeFormat) -> None:
    with pytest.raises(RejectedMessage) as exc:
        fmt.parse("city/bkk/air/a1", b"[1, 2]", RECEIVED)
    assert exc.value.reason == "bad_json"
    assert "JSON object" in exc.value.detail and "array" in exc.value.detail


@pytest.mark.parametrize(
    "topic", ["city/bkk/air", "city/bkk/air/a1/extra", "town/bkk/air/a1", "city//air/a1", "city/bkk/water/a1"]
)
def test_bad_topic(fmt: NativeFormat, topic: str) -> None:
    with pytest.raises(RejectedMessage) as exc:
        fmt.parse(topic, b'{"pm25_ugm3":1}', RECEIVED)
    assert exc.value.reason == "bad_topic"


def test_no_values(fmt: NativeFormat) -> None:
    with pytest.raises(RejectedMessage) as exc:
        fmt.parse("city/bkk/air/a1", b'{"ts": 1714557600}', RECEIVED)
    assert exc.value.reason == "no_values"


def test_configurable_prefix() -> None:
    fmt = make_format("native", prefix="nakhon/v1")
    [r] = fmt.parse("nakhon/v1/khonkaen/air/a9", b'{"pm25_ugm3":7}', RECEIVED)
    assert (r.topic_city, r.device.device_id) == ("khonkaen", "a9")
    with pytest.raises(RejectedMessage):
        fmt.parse("city/khonkaen/air/a9", b'{"pm25_ugm3":7}', RECEIVED)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                 st.integers(min_value=int(EPOCH_S_MAX) - 5, max_value=int(EPOCH_S_MAX) + 5),
                 st.integers(min_value=int(EPOCH_MS_MAX) - 5, max_value=int(EPOCH_MS_MAX) + 5),
                 st.integers(min_value=int(EPOCH_S_MAX), max_value=int(EPOCH_MS_MAX))))
def test_an_integer_ts_means_what_time_to_ns_says(ts: int) -> None:
    """The parser's inline epoch-milliseconds case agrees with the general time parsing, on either side of
    its edges too (seconds below, microseconds above, rejections)."""
    fmt = NativeFormat()
    try:
        expected: int | str = time_to_ns(ts, "ts")
    except RejectedMessage as exc:
        expected = f"{exc.reason}: {exc.detail}"
    try:
        [r] = fmt.parse("city/cm/air/a1", orjson.dumps({"ts": ts, "pm25_ugm3": 1.0}), RECEIVED)
        got: int | str | None = r.time_ns
    except RejectedMessage as exc:
        got = f"{exc.reason}: {exc.detail}"
    assert got == expected
