"""Helpers shared by the payload formats: JSON decoding, time parsing (UTC nanoseconds, int) and the values of
LoRaWAN uplinks (a network server's decoded object, else Cayenne LPP).

Times
-----
* RFC 3339 strings must carry an offset (`Z`, `+00:00`, `+07:00`, ...). A naive string such as
  `2024-05-01T10:00:00` is rejected (`bad_time`): Thai devices are set to Asia/Bangkok as often as to UTC,
  so guessing would shift readings by 7 hours without anyone noticing. Fractions of up to 9 digits are kept
  exactly (The Things Stack and ChirpStack send nanoseconds).
* Epoch numbers are told apart by magnitude (absolute value, after checking it is positive):

  ============================  ============  ===============================================
  value                         read as       why the threshold is safe
  ============================  ============  ===============================================
  ``< 1e11``                    seconds       1e11 s is the year 5138; 1e11 ms would be 1973
  ``1e11 <= v < 1e14``          milliseconds  1e14 ms is the year 5138; 1e14 µs would be 1973
  ``1e14 <= v < 1e17``          microseconds  1e17 µs is the year 5138; 1e17 ns would be 1973
  ``>= 1e17``                   nanoseconds   (int64 nanoseconds end in 2262)
  ============================  ============  ===============================================

  So any real time between 1973 and 5138 is read correctly in any of the four units.
"""

from __future__ import annotations

import calendar
import contextlib
import re
from collections.abc import Iterator
from typing import Any

import orjson

from collectors.errors import RejectedMessage
from collectors.formats.lpp.parser import decode_lpp_text

NS_PER_S = 1_000_000_000

EPOCH_S_MAX = 1e11
EPOCH_MS_MAX = 1e14
EPOCH_US_MAX = 1e17
EPOCH_NS_MAX = 2**63 - 1

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)


def loads_json(payload: bytes | str) -> Any:
    """Decode JSON with orjson; a decode error becomes `bad_json` (the detail names orjson's reason)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise RejectedMessage("bad_json", f"payload is not valid JSON: {exc}") from None


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error details."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def loads_object(payload: bytes | str, what: str = "payload") -> dict[str, Any]:
    """Decode a JSON payload that must be an object."""
    doc = loads_json(payload)
    if not isinstance(doc, dict):
        raise RejectedMessage("bad_json", f"{what} must be a JSON object, got a JSON {json_type(doc)}")
    return doc


def parse_rfc3339_ns(text: str, field: str = "time") -> int:
    """Parse an RFC 3339 timestamp with an offset to UTC nanoseconds, keeping up to 9 fraction digits."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise RejectedMessage("bad_time", f"{field} {text!r} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = m.groups()
    if zulu is None and sign is None:
        raise RejectedMessage(
            "bad_time",
            f"{field} {text!r} has no UTC offset; a naive time is ambiguous (device clock in UTC or "
            "Asia/Bangkok?), send 'Z' or '+07:00'",
        )
    mo, d, h, mi, s = int(month), int(day), int(hour), int(minute), int(second)
    if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(int(year), mo)[1] and h <= 23 and mi <= 59 and s <= 60):
        raise RejectedMessage("bad_time", f"{field} {text!r} is not a valid date and time")
    if s == 60:  # a leap second: RFC 3339 allows it, POSIX time folds it onto the next second
        s = 59
        frac = "999999999"
    seconds = calendar.timegm((int(year), mo, d, h, mi, s, 0, 0, 0))
    if sign is not None:
        offset = int(off_h) * 3600 + int(off_m) * 60
        if int(off_h) > 23 or int(off_m) > 59:
            raise RejectedMessage("bad_time", f"{field} {text!r} has an invalid UTC offset")
        seconds -= offset if sign == "+" else -offset
    ns = int((frac or "")[:9].ljust(9, "0")) if frac else 0
    return seconds * NS_PER_S + ns


def epoch_to_ns(value: float | int, field: str = "ts") -> int:
    """Epoch seconds / ms / µs / ns (told apart by magnitude, see the module doc) to UTC nanoseconds."""
    if value != value or value in (float("inf"), float("-inf")):
        raise RejectedMessage("bad_time", f"{field} {value!r} is not a finite number")
    if value <= 0:
        raise RejectedMessage("bad_time", f"{field} {value!r} is not a positive epoch time")
    if value < EPOCH_S_MAX:
        if isinstance(value, int):
            return value * NS_PER_S
        whole = int(value)
        # float seconds carry ~0.2 µs of precision at today's epoch: round the fraction to microseconds
        return whole * NS_PER_S + round((value - whole) * 1_000_000) * 1000
    if value < EPOCH_MS_MAX:
        return int(value) * 1_000_000 if isinstance(value, int) else round(value * 1000) * 1000
    if value < EPOCH_US_MAX:
        return int(value) * 1000 if isinstance(value, int) else round(value) * 1000
    if value > EPOCH_NS_MAX:
        raise RejectedMessage("bad_time", f"{field} {value!r} is beyond the nanosecond range (year 2262)")
    return int(value)


def time_to_ns(value: Any, field: str = "ts") -> int:
    """A JSON time value (RFC 3339 string, or epoch number, or a string of digits) to UTC nanoseconds."""
    if isinstance(value, bool):
        raise RejectedMessage("bad_time", f"{field} must be an RFC 3339 string or an epoch number, got a boolean")
    if isinstance(value, int | float):
        return epoch_to_ns(value, field)
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.isdigit():
            return epoch_to_ns(int(stripped), field)
        return parse_rfc3339_ns(stripped, field)
    raise RejectedMessage(
        "bad_time", f"{field} must be an RFC 3339 string or an epoch number, got a JSON {json_type(value)}"
    )


def mqtt_topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching with `+` (one level) and `#` (all remaining levels, also none)."""
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts):
            return False
        if part != "+" and part != t_parts[i]:
            return False
    return len(f_parts) == len(t_parts)


@contextlib.contextmanager
def rejected_for(device_id: str | None) -> Iterator[None]:
    """Name `device_id` on any `RejectedMessage` raised inside (once the envelope told which device sent it)."""
    try:
        yield
    except RejectedMessage as exc:
        exc.device_id = device_id
        raise


def lorawan_values(
    decoded: Any,
    frm_payload: Any,
    *,
    decoded_field: str,
    payload_field: str,
    lpp_fallback: bool,
    device_id: str | None,
    no_values: str,
) -> dict[str, Any]:
    """The values of a LoRaWAN uplink: the network server's decoded object when it is a non-empty object, else
    (with `lpp_fallback`) the base64 `frm_payload` decoded as Cayenne LPP.

    `decoded_field` / `payload_field` name the two in error details; `no_values` is the detail when neither
    gives a value. Every rejection names `device_id`: a decoded value that is not an object is `bad_json`, an
    undecodable frame `bad_payload`, nothing to read `no_values`.
    """
    if isinstance(decoded, dict) and decoded:
        return decoded
    if decoded is not None and not isinstance(decoded, dict):
        raise RejectedMessage(
            "bad_json", f"{decoded_field} must be a JSON object, got a JSON {json_type(decoded)}", device_id=device_id
        )
    values: dict[str, Any] = {}
    if lpp_fallback and isinstance(frm_payload, str) and frm_payload:
        with rejected_for(device_id):
            values = decode_lpp_text(frm_payload, payload_field)
    if not values:
        raise RejectedMessage("no_values", no_values, device_id=device_id)
    return values
