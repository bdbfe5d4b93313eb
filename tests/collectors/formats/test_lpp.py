"""Cayenne LPP: known frames from the LPP reference, TTS docs and TTS's own decoder tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collectors.errors import RejectedMessage
from collectors.formats import LppError, LppFormat, decode_lpp

VECTORS = json.loads(
    (Path(__file__).parents[3] / "collectors" / "formats" / "lpp" / "testdata" / "vectors.json").read_text()
)


def _close(actual: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for k in expected:
            _close(actual[k], expected[k])
    else:
        assert actual == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_known_frames(vector: dict[str, Any]) -> None:
    _close(decode_lpp(bytes.fromhex(vector["hex"])), vector["expected"])


def test_digital_values_stay_integers() -> None:
    out = decode_lpp(bytes.fromhex("0100FF020164066632"))
    assert out == {"digital_in_1": 255, "digital_out_2": 100, "presence_6": 50}
    assert all(type(v) is int for v in out.values())


def test_unknown_type_names_type_and_offset() -> None:
    with pytest.raises(LppError, match=r"0x99.*offset 4"):
        decode_lpp(bytes.fromhex("036701100599"))


def test_truncated_frame() -> None:
    with pytest.raises(LppError, match="truncated temperature"):
        decode_lpp(bytes.fromhex("036701"))
    with pytest.raises(LppError, match="dangling"):
        decode_lpp(bytes.fromhex("0367011005"))


def test_plain_lpp_format_binary_topic_identity() -> None:
    [r] = LppFormat().parse("lpp/node-12", bytes.fromhex("03670110056700FF"), 42)
    assert r.device.device_id == "node-12" and r.time_ns == 42
    assert r.values == {"temperature_3": 27.2, "temperature_5": 25.5}


def test_plain_lpp_format_hex_and_base64_encodings() -> None:
    [h] = LppFormat(encoding="hex").parse("lpp/n", b"03670110056700FF", 1)
    [b] = LppFormat(encoding="base64").parse("lpp/n", b"A2cBEAVnAP8=", 1)
    assert h.values == b.values == {"temperature_3": 27.2, "temperature_5": 25.5}


def test_plain_lpp_rejects() -> None:
    fmt = LppFormat()
    cases = [
        ("lpp", b"\x03g\x01\x10", "bad_topic"),
        ("lpp/a/b", b"\x03g\x01\x10", "bad_topic"),
        ("lpp/n", b"", "no_values"),
        ("lpp/n", b"\x03\x99\x00", "bad_payload"),
    ]
    for topic, payload, reason in cases:
        with pytest.raises(RejectedMessage) as exc:
            fmt.parse(topic, payload, 1)
        assert exc.value.reason == reason, (topic, payload)
    with pytest.raises(RejectedMessage) as exc:
        LppFormat(encoding="hex").parse("lpp/n", b"zz", 1)
    assert exc.value.reason == "bad_payload"


RIOT = json.loads(
    (Path(__file__).parents[3] / "collectors" / "formats" / "lpp" / "testdata" / "riot_vectors.json").read_text()
)


def _within_lsb(actual: Any, expected: Any, lsb: Any) -> None:
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for k in expected:
            _within_lsb(actual[k], expected[k], lsb[k])
    else:
        # one least significant bit, plus float noise in the decimal LSB itself
        assert abs(actual - expected) <= lsb * 1.000001, (actual, expected, lsb)


@pytest.mark.parametrize("vector", RIOT["vectors"], ids=[v["name"] for v in RIOT["vectors"]])
def test_riot_encoder_buffers_decode_within_one_lsb_of_what_was_encoded(vector: dict[str, Any]) -> None:
    _within_lsb(decode_lpp(bytes.fromhex(vector["hex"])), vector["encoded_from"], vector["lsb"])


def test_riot_native32_buffer_is_not_mistaken_for_the_64_bit_one() -> None:
    by_name = {v["name"]: decode_lpp(bytes.fromhex(v["hex"])) for v in RIOT["vectors"]}
    native32 = by_name["riot test 2: the BOARD_NATIVE32 buffer (32-bit float rounding: one LSB lower)"]
    assert native32["temperature_1"] == pytest.approx(-4.0)
    assert native32["accelerometer_6"] == pytest.approx({"x": 1.233, "y": -1.233, "z": 0.0})
