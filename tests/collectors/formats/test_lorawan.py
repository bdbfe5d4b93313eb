"""The Things Stack v3 and ChirpStack v4 uplinks, on the public documentation samples."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from collectors.errors import RejectedMessage
from collectors.formats import ChirpStackFormat, TTNFormat

ROOT = Path(__file__).parents[3] / "collectors" / "formats"
TTN = ROOT / "ttn" / "testdata"
CS = ROOT / "chirpstack" / "testdata"
RECEIVED = 1_700_000_000_000_000_000
TTN_TOPIC = "v3/app1@ttn/devices/dev1/up"
CS_TOPIC = "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/0101010101010101/event/up"


def utc_ns(y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000_000


# --- The Things Stack ---


def test_ttn_docs_example_identity_time_values() -> None:
    [r] = TTNFormat().parse(TTN_TOPIC, (TTN / "uplink_docs_example.json").read_bytes(), RECEIVED)
    assert r.device.device_id == "dev1"
    assert r.device.dev_eui == "0004A30B001C0530"
    assert r.time_ns == utc_ns(2020, 2, 12, 15, 15, 46) + 14_773_143  # received_at, ns precision kept
    assert r.values == {"temperature": 1.0, "luminosity": 0.64}


def test_ttn_decoded_payload_wins_over_frm_payload() -> None:
    [r] = TTNFormat().parse(TTN_TOPIC, (TTN / "uplink_cayenne_decoded.json").read_bytes(), RECEIVED)
    assert r.values == {"temperature_3": 27.200000762939453, "temperature_5": 25.5}


def test_ttn_frm_payload_decoded_as_cayenne_lpp() -> None:
    [r] = TTNFormat().parse(TTN_TOPIC, (TTN / "uplink_cayenne_raw.json").read_bytes(), RECEIVED)
    assert r.values == {"temperature_3": 27.2, "temperature_5": 25.5}


def test_ttn_frm_payload_pressure_example_from_docs() -> None:
    [r] = TTNFormat().parse(TTN_TOPIC, (TTN / "uplink_cayenne_raw_pressure.json").read_bytes(), RECEIVED)
    assert r.values == {"barometric_pressure_0": 1017.5, "temperature_0": 22.2}


def test_ttn_single_tenant_topic_accepted() -> None:
    [r] = TTNFormat().parse("v3/app1/devices/dev1/up", (TTN / "uplink_docs_example.json").read_bytes(), RECEIVED)
    assert r.device.device_id == "dev1"


def test_ttn_no_fallback_means_no_values() -> None:
    with pytest.raises(RejectedMessage) as exc:
        TTNFormat(lpp_fallback=False).parse(TTN_TOPIC, (TTN / "uplink_cayenne_raw.json").read_bytes(), RECEIVED)
    assert exc.value.reason == "no_values"
    assert exc.value.device_id == "dev1"


@pytest.mark.parametrize("topic", ["v3/app1@ttn/devices/dev1/join", "v2/app1/devices/dev1/up", "v3/app1@ttn/dev1/up"])
def test_ttn_bad_topic(topic: str) -> None:
    with pytest.raises(RejectedMessage) as exc:
        TTNFormat().parse(topic, (TTN / "uplink_docs_example.json").read_bytes(), RECEIVED)
    assert exc.value.reason == "bad_topic"


def test_ttn_bad_json_and_non_object() -> None:
    for payload in (b"{nope", b'"up"'):
        with pytest.raises(RejectedMessage) as exc:
            TTNFormat().parse(TTN_TOPIC, payload, RECEIVED)
        assert exc.value.reason == "bad_json"


def test_ttn_bad_received_at() -> None:
    with pytest.raises(RejectedMessage) as exc:
        TTNFormat().parse(
            TTN_TOPIC, b'{"received_at":"2020-02-12 15:15","uplink_message":{"decoded_payload":{"a":1}}}', RECEIVED
        )
    assert exc.value.reason == "bad_time"


def test_ttn_join_message_has_no_values() -> None:
    with pytest.raises(RejectedMessage) as exc:
        TTNFormat().parse(TTN_TOPIC, b'{"end_device_ids":{"device_id":"dev1"},"join_accept":{}}', RECEIVED)
    assert exc.value.reason == "no_values"


def test_ttn_frm_payload_not_lpp_is_bad_payload() -> None:
    # the docs example's own frm_payload "gkHe" (82 41 de) is not Cayenne LPP: type 0x41 is unknown
    payload = (TTN / "uplink_docs_example.json").read_bytes().replace(b'"decoded_payload"', b'"was_decoded"')
    with pytest.raises(RejectedMessage) as exc:
        TTNFormat().parse(TTN_TOPIC, payload, RECEIVED)
    assert exc.value.reason == "bad_payload"
    assert "0x41" in exc.value.detail


# --- ChirpStack v4 ---


def test_chirpstack_identity_time_and_object() -> None:
    [r] = ChirpStackFormat().parse(CS_TOPIC, (CS / "up_with_object.json").read_bytes(), RECEIVED)
    assert r.device.dev_eui == "0101010101010101"
    assert r.device.device_id == "Test device"
    assert r.time_ns == utc_ns(2022, 7, 18, 9, 34, 15) + 775_023_242
    assert r.values == {"temperatureSensor": {"3": 27.2, "5": 25.5}}


def test_chirpstack_data_decoded_as_cayenne_lpp() -> None:
    [r] = ChirpStackFormat().parse(CS_TOPIC, (CS / "up_cayenne_raw.json").read_bytes(), RECEIVED)
    assert r.values == {"temperature_3": 27.2, "temperature_5": 25.5}


def test_chirpstack_docs_example_data_is_not_lpp() -> None:
    # the docs example carries data "qg==" (one byte 0xaa) and no object: not a Cayenne LPP frame
    with pytest.raises(RejectedMessage) as exc:
        ChirpStackFormat().parse(CS_TOPIC, (CS / "up_docs_example.json").read_bytes(), RECEIVED)
    assert exc.value.reason == "bad_payload"
    assert exc.value.device_id == "Test device"


def test_chirpstack_without_object_or_fallback_has_no_values() -> None:
    with pytest.raises(RejectedMessage) as exc:
        ChirpStackFormat(lpp_fallback=False).parse(CS_TOPIC, (CS / "up_docs_example.json").read_bytes(), RECEIVED)
    assert exc.value.reason == "no_values"


def test_chirpstack_dev_eui_only_mode() -> None:
    [r] = ChirpStackFormat(name_is_device_id=False).parse(CS_TOPIC, (CS / "up_with_object.json").read_bytes(), RECEIVED)
    assert r.device.device_id is None and str(r.device) == "deveui:0101010101010101"


def test_chirpstack_bad_topic_and_bad_time() -> None:
    with pytest.raises(RejectedMessage) as exc:
        ChirpStackFormat().parse("application/x/device/y/event/join", b"{}", RECEIVED)
    assert exc.value.reason == "bad_topic"
    with pytest.raises(RejectedMessage) as exc:
        ChirpStackFormat().parse(CS_TOPIC, b'{"time":"2022-07-18T09:34:15","object":{"a":1}}', RECEIVED)
    assert exc.value.reason == "bad_time"


def test_chirpstack_bad_base64() -> None:
    with pytest.raises(RejectedMessage) as exc:
        ChirpStackFormat().parse(CS_TOPIC, b'{"data":"***"}', RECEIVED)
    assert exc.value.reason == "bad_payload"
