"""SenML JSON (RFC 8428) packs on a configurable topic (default `senml/#`).

Resolution follows RFC 8428 section 4.6: base fields (`bn`, `bt`, `bu`, `bv`, `bs`) apply to the record
that carries them and to every later record until a record sets them again; name = bn + n; time = bt + t,
and a resolved time below 2**28 is relative to now (here: the time the message was received); a missing
unit falls back to `bu`; a numeric value is bv + v (sum bs + s).

Each resolved record becomes a value of the device named by its base name: records are grouped by
(device, time), one RawReading per group, so a pack of one device at one instant gives one reading and a
pack carrying a series (RFC 8428 example 5.1.3) gives one reading per instant.
"""

from __future__ import annotations

from typing import Any

from collectors.errors import RejectedMessage
from collectors.formats._common import NS_PER_S, json_type, loads_json, mqtt_topic_matches
from core.model import DeviceRef, RawReading

RELATIVE_LIMIT = 2**28  # RFC 8428 4.5.3: times below this are relative to the current time
SUPPORTED_VERSION = 10  # RFC 8428 default base version


def _seconds_to_ns(seconds: float) -> int:
    """Float seconds to ns, rounded to the microsecond (a float64 epoch carries about 0.2 µs)."""
    whole = int(seconds)
    return whole * NS_PER_S + round((seconds - whole) * 1_000_000) * 1000


def _num(record: dict[str, Any], key: str, index: int) -> float:
    value = record.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RejectedMessage("bad_json", f"record {index}: {key!r} must be a number, got a JSON {json_type(value)}")
    return value


class SenMLFormat:
    """RFC 8428 SenML JSON; the device id is the base name without its trailing separator."""

    name = "senml"

    def __init__(self, topic: str = "senml/#", strip_prefix: str = "", separators: str = ":/._-") -> None:
        if not topic:
            raise ValueError("senml: topic must be a non-empty MQTT topic filter")
        self.topic_filter = topic
        self.strip_prefix = strip_prefix
        self.separators = separators

    def device_id_of(self, base_name: str) -> str:
        """`urn:dev:ow:10e2073a01080063:` -> `urn:dev:ow:10e2073a01080063` (then the strip prefix, if set)."""
        device = base_name.rstrip(self.separators) if self.separators else base_name
        if self.strip_prefix and device.startswith(self.strip_prefix):
            device = device[len(self.strip_prefix) :]
        return device

    def parse(self, topic: str, payload: bytes, received_ns: int) -> list[RawReading]:
        if not mqtt_topic_matches(self.topic_filter, topic):
            raise RejectedMessage("bad_topic", f"topic {topic!r} does not match {self.topic_filter!r}")
        pack = loads_json(payload)
        if isinstance(pack, dict):  # lenient: a lone record instead of a one-record pack
            pack = [pack]
        if not isinstance(pack, list):
            raise RejectedMessage(
                "bad_json", f"a SenML pack must be a JSON array of records, got a JSON {json_type(pack)}"
            )

        bn, bu = "", None
        bt = bv = bs = 0.0
        groups: dict[tuple[str, int], RawReading] = {}
        for index, record in enumerate(pack):
            if not isinstance(record, dict):
                raise RejectedMessage(
                    "bad_json", f"record {index} must be a JSON object, got a JSON {json_type(record)}"
                )
            if "bver" in record:
                bver = record["bver"]
                if isinstance(bver, bool) or not isinstance(bver, int) or bver > SUPPORTED_VERSION:
                    raise RejectedMessage("bad_json", f"record {index}: unsupported SenML version bver={bver!r}")
            if "bn" in record:
                if not isinstance(record["bn"], str):
                    raise RejectedMessage("bad_json", f"record {index}: 'bn' must be a string")
                bn = record["bn"]
            if "bt" in record:
                bt = _num(record, "bt", index)
            if "bu" in record:
                bu = record["bu"] if isinstance(record["bu"], str) and record["bu"] else None
            if "bv" in record:
                bv = _num(record, "bv", index)
            if "bs" in record:
                bs = _num(record, "bs", index)

            n = record.get("n", "")
            if not isinstance(n, str):
                raise RejectedMessage("bad_json", f"record {index}: 'n' must be a string")
            unit = record.get("u") if isinstance(record.get("u"), str) and record.get("u") else bu

            value: Any
            if "v" in record:
                v = _num(record, "v", index)
                value = v + bv if bv else v
            elif "vb" in record:
                value = record["vb"]
                if not isinstance(value, bool):
                    raise RejectedMessage("bad_json", f"record {index}: 'vb' must be true or false")
            elif "vs" in record:
                value = record["vs"]
                if not isinstance(value, str):
                    raise RejectedMessage("bad_json", f"record {index}: 'vs' must be a string")
            elif "vd" in record:
                value = record["vd"]
                if not isinstance(value, str):
                    raise RejectedMessage("bad_json", f"record {index}: 'vd' must be a base64url string")
            elif "s" in record:
                value = bs + _num(record, "s", index)
            else:
                continue  # a record carrying only base fields (RFC 8428 example 5.1.8)

            t = bt + _num(record, "t", index)
            if t >= RELATIVE_LIMIT:
                time_ns = _seconds_to_ns(t)
            else:
                time_ns = received_ns + _seconds_to_ns(t) if t >= 0 else received_ns - _seconds_to_ns(-t)

            if bn:
                device = self.device_id_of(bn)
                key = n or (unit or "value")
            else:
                # no base name: the record name is the device, measurements told apart by their unit
                device = self.device_id_of(n)
                key = unit or "value"
            if not device:
                raise RejectedMessage(
                    "bad_json", f"record {index} resolves to an empty name: no device to attribute it to"
                )
            if "v" not in record and "s" in record:
                key = f"{key}_sum"

            group = groups.get((device, time_ns))
            if group is None:
                group = groups[(device, time_ns)] = RawReading(DeviceRef(device_id=device), {}, time_ns)
            group.values[key] = value
            if unit:
                group.units[key] = unit

        if not groups:
            raise RejectedMessage("no_values", "the SenML pack has no record with a value")
        return list(groups.values())
