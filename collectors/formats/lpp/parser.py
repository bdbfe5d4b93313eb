"""Cayenne LPP (Low Power Payload) binary decoder, and the plain `lpp` format over `lpp/{device_id}`.

Frame: a sequence of `[channel:1][type:1][data:n]`, multi-byte values big-endian. Names follow The Things
Stack's CayenneLPP formatter exactly (`temperature_3`, `relative_humidity_2`, `analog_in_1`,
`gps_1: {latitude, longitude, altitude}` ...), so one mapping profile serves a device whether TTS decoded
the frame or we did.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from collectors.errors import RejectedMessage
from core.model import DeviceRef, RawReading


class LppError(ValueError):
    """A Cayenne LPP frame that cannot be decoded (unknown type or truncated data)."""


# type id -> (name, [(sub-name or "", size in bytes, signed, divisor)])
# Standard IPSO-based types of the Cayenne LPP reference (myDevices "Cayenne Docs", LoRa section).
LPP_TYPES: dict[int, tuple[str, tuple[tuple[str, int, bool, int], ...]]] = {
    0: ("digital_in", (("", 1, False, 1),)),
    1: ("digital_out", (("", 1, False, 1),)),
    2: ("analog_in", (("", 2, True, 100),)),
    3: ("analog_out", (("", 2, True, 100),)),
    101: ("luminosity", (("", 2, False, 1),)),
    102: ("presence", (("", 1, False, 1),)),
    103: ("temperature", (("", 2, True, 10),)),
    104: ("relative_humidity", (("", 1, False, 2),)),
    113: ("accelerometer", (("x", 2, True, 1000), ("y", 2, True, 1000), ("z", 2, True, 1000))),
    115: ("barometric_pressure", (("", 2, False, 10),)),
    134: ("gyrometer", (("x", 2, True, 100), ("y", 2, True, 100), ("z", 2, True, 100))),
    136: ("gps", (("latitude", 3, True, 10000), ("longitude", 3, True, 10000), ("altitude", 3, True, 100))),
}


def _number(raw: int, divisor: int) -> int | float:
    return raw if divisor == 1 else raw / divisor


def decode_lpp(frame: bytes) -> dict[str, Any]:
    """Decode a Cayenne LPP frame to `{"<type>_<channel>": value}` (multi-axis types give a dict).

    Raises `LppError` naming the byte offset on an unknown type or a truncated frame.
    """
    out: dict[str, Any] = {}
    i = 0
    n = len(frame)
    while i < n:
        if i + 2 > n:
            raise LppError(f"truncated frame: {n - i} dangling byte(s) at offset {i}")
        channel, type_id = frame[i], frame[i + 1]
        spec = LPP_TYPES.get(type_id)
        if spec is None:
            raise LppError(f"unknown LPP type 0x{type_id:02x} ({type_id}) on channel {channel} at offset {i}")
        name, parts = spec
        i += 2
        values: dict[str, int | float] = {}
        for sub, size, signed, divisor in parts:
            if i + size > n:
                raise LppError(f"truncated {name} on channel {channel}: needs {size} byte(s) at offset {i}")
            raw = int.from_bytes(frame[i : i + size], "big", signed=signed)
            values[sub] = _number(raw, divisor)
            i += size
        key = f"{name}_{channel}"
        out[key] = values.get("", values)
    return out


def decode_lpp_text(data: str, field: str) -> dict[str, Any]:
    """Decode base64 text (as LoRaWAN servers send `frm_payload` / `data`) and then the LPP frame inside."""
    try:
        frame = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RejectedMessage("bad_payload", f"{field} is not valid base64") from None
    try:
        return decode_lpp(frame)
    except LppError as exc:
        raise RejectedMessage("bad_payload", f"{field} is not a Cayenne LPP frame: {exc}") from None


Encoding = Literal["binary", "hex", "base64"]


class LppFormat:
    """Raw Cayenne LPP frames published on `{prefix}/{device_id}` (payload binary, or hex / base64 text)."""

    name = "lpp"

    def __init__(self, prefix: str = "lpp", encoding: Encoding = "binary") -> None:
        prefix = prefix.strip("/")
        if not prefix or "+" in prefix or "#" in prefix:
            raise ValueError(f"lpp: prefix {prefix!r} must be a non-empty topic path without wildcards")
        if encoding not in ("binary", "hex", "base64"):
            raise ValueError(f"lpp: encoding {encoding!r} is not one of binary, hex, base64")
        self.prefix = prefix
        self.encoding = encoding
        self._prefix_parts = prefix.split("/")

    @property
    def topic_filter(self) -> str:
        return f"{self.prefix}/+"

    def parse(self, topic: str, payload: bytes, received_ns: int) -> list[RawReading]:
        parts = topic.split("/")
        if len(parts) != len(self._prefix_parts) + 1 or parts[:-1] != self._prefix_parts or not parts[-1]:
            raise RejectedMessage("bad_topic", f"topic {topic!r} is not {self.prefix}/{{device_id}}")
        device_id = parts[-1]
        frame = payload
        try:
            if self.encoding == "hex":
                frame = bytes.fromhex(payload.decode("ascii"))
            elif self.encoding == "base64":
                frame = base64.b64decode(payload, validate=True)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise RejectedMessage("bad_payload", f"payload is not {self.encoding} text", device_id=device_id) from None
        try:
            values = decode_lpp(frame)
        except LppError as exc:
            raise RejectedMessage("bad_payload", f"not a Cayenne LPP frame: {exc}", device_id=device_id) from None
        if not values:
            raise RejectedMessage("no_values", "empty Cayenne LPP frame", device_id=device_id)
        return [RawReading(DeviceRef(device_id=device_id), values, received_ns)]
