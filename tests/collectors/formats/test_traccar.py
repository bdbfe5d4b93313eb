"""The Traccar forwarder format: the public forwarder sample, fixTime, knots, no-fix reports, rejects."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from collectors.errors import RejectedMessage
from collectors.formats import TraccarFormat, make_format

DATA = Path(__file__).parents[3] / "collectors" / "formats" / "traccar" / "testdata"
RECEIVED = 1_795_741_300 * 1_000_000_000
NS = 1_000_000_000


def utc_ns(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * NS


@pytest.fixture
def fmt() -> TraccarFormat:
    fmt = make_format("traccar")
    assert isinstance(fmt, TraccarFormat)
    return fmt


def test_public_forwarder_sample_position_device_and_fix_time(fmt: TraccarFormat) -> None:
    # gamebeast2k/docker_traccar2mqtt forward_data/forward.json, verbatim (coordinates anonymised there)
    [r] = fmt.parse("traccar/positions", (DATA / "forward_gamebeast2k.json").read_bytes(), RECEIVED)
    assert r.device.device_id == "305975"  # device.uniqueId, not Traccar's internal deviceId 2
    assert r.time_ns == utc_ns(2022, 3, 29, 18, 25, 0)  # fixTime "2022-03-29T18:25:00.000+0000"
    assert r.values == {"lat": 99.4502234, "lon": 99.5725244, "heading_deg": 0, "speed_kmh": 0.0}


def test_speed_knots_become_kmh_and_io_attributes_are_mapped(fmt: TraccarFormat) -> None:
    [r] = fmt.parse("traccar/positions", (DATA / "forward_school_bus.json").read_bytes(), RECEIVED)
    assert r.device.device_id == "bus-lc-01"
    assert r.values["speed_kmh"] == pytest.approx(21.6 * 1.852)
    assert (r.values["ignition"], r.values["door_open"], r.values["occupancy"]) == (True, False, 18)
    assert r.time_ns == utc_ns(2026, 11, 27, 0, 59, 0)  # fixTime, not deviceTime (00:59:01) or serverTime


def test_report_without_a_fix_keeps_io_but_not_the_stale_position(fmt: TraccarFormat) -> None:
    [r] = fmt.parse("traccar/positions", (DATA / "forward_no_fix.json").read_bytes(), RECEIVED)
    assert r.values == {"ignition": True}
    assert r.time_ns == utc_ns(2026, 11, 27, 0, 59, 30)  # deviceTime: the stale fixTime is not this report's


def test_bare_position_takes_the_device_from_the_topic(fmt: TraccarFormat) -> None:
    [r] = fmt.parse("traccar/bus-lc-02", (DATA / "position_bare.json").read_bytes(), RECEIVED)
    assert r.device.device_id == "bus-lc-02"
    assert r.time_ns == utc_ns(2026, 11, 27, 1, 0, 0)
    assert r.values["lat"] == 13.0831 and r.values["ignition"] is False


def test_identity_by_name_when_configured() -> None:
    fmt = make_format("traccar", id_field="name")
    [r] = fmt.parse("traccar/positions", (DATA / "forward_gamebeast2k.json").read_bytes(), RECEIVED)
    assert r.device.device_id == "car1"


@pytest.mark.parametrize(
    ("payload", "reason", "part"),
    [
        (b"[1, 2]", "bad_json", "array"),
        (b"{not json", "bad_json", "JSON"),
        (b'{"event": {"type": "deviceOnline"}, "device": {"uniqueId": "x"}}', "no_values", "position"),
        (b'{"position": {"fixTime": "2026-11-27T00:59:00"}, "device": {"uniqueId": "x"}}', "no_values", "fix"),
        (b'{"position": {"latitude": 13.1, "fixTime": "yesterday"}, "device": {"uniqueId": "bus-9"}}', "bad_time",
         "position.fixTime"),
    ],
)
def test_rejects(fmt: TraccarFormat, payload: bytes, reason: str, part: str) -> None:
    with pytest.raises(RejectedMessage) as caught:
        fmt.parse("traccar/positions", payload, RECEIVED)
    assert caught.value.reason == reason and part in caught.value.detail


def test_bad_time_names_the_device(fmt: TraccarFormat) -> None:
    with pytest.raises(RejectedMessage) as caught:
        fmt.parse("traccar/positions", b'{"position": {"latitude": 1, "fixTime": "x"}, "device": {"uniqueId": "b"}}',
                  RECEIVED)
    assert caught.value.device_id == "b"


def test_unknown_option_is_a_config_error() -> None:
    from collectors.formats import FormatConfigError

    with pytest.raises(FormatConfigError, match="id_field"):
        make_format("traccar", id_field="imei")
