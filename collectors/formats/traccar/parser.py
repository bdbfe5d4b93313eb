"""Traccar's position forwarder (`forward.type = mqtt` / `json`): `{"position": {...}, "device": {...}}`.

Traccar serialises its `PositionData` (position + device, nulls omitted) with Jackson: times like
`2022-03-29T18:25:00.000+0000`, speed in knots, course in degrees, device IO in `position.attributes`.
A bare position object (older forwarders, `{"latitude": ..., "fixTime": ...}`) is read too.
"""

from __future__ import annotations

from typing import Any

from collectors.errors import RejectedMessage
from collectors.formats._common import json_type, loads_json, rejected_for, time_to_ns
from core.model import DeviceRef, RawReading

#: 1 knot = 1852 m/h exactly (international nautical mile), so 1 kn = 1.852 km/h.
KMH_PER_KNOT = 1.852

# position.attributes -> canonical bus field (Traccar's own keys: Position.KEY_IGNITION, KEY_DOOR).
# `passengers` is not a Traccar key: a computed attribute some deployments define (assumption, documented).
_ATTRIBUTES = {"ignition": "ignition", "door": "door_open", "passengers": "occupancy"}


def _identity(device: Any, topic: str, field: str) -> str:
    if isinstance(device, dict):
        value = device.get(field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    last = topic.rsplit("/", 1)[-1]
    if last and last not in ("+", "#"):
        return last
    raise RejectedMessage("no_device", f"no device.{field} in the payload and no device id in topic {topic!r}")


class TraccarFormat:
    """Traccar forwarded positions; identity = `device.<id_field>` (Traccar's "Identifier", default), else
    the topic's last level (a bare position carries only Traccar's internal numeric `deviceId`)."""

    name = "traccar"

    def __init__(self, id_field: str = "uniqueId") -> None:
        if id_field not in ("uniqueId", "name"):
            raise ValueError(f"traccar: id_field must be 'uniqueId' or 'name', not {id_field!r}")
        self.id_field = id_field

    def parse(self, topic: str, payload: bytes, received_ns: int) -> list[RawReading]:
        doc = loads_json(payload)
        if not isinstance(doc, dict):
            raise RejectedMessage("bad_json", f"payload must be a JSON object, got a JSON {json_type(doc)}")
        position = doc.get("position", doc if "latitude" in doc or "fixTime" in doc else None)
        if not isinstance(position, dict):
            raise RejectedMessage(
                "no_values", "no position object (expected Traccar's {\"position\": ..., \"device\": ...})"
            )
        device_id = _identity(doc.get("device"), topic, self.id_field)
        with rejected_for(device_id):
            return [self._reading(position, device_id, received_ns)]

    def _reading(self, position: dict[str, Any], device_id: str, received_ns: int) -> RawReading:
        values: dict[str, Any] = {}
        # valid=false: the receiver has no fix and repeats an old/zero position; outdated=true: the position
        # is the last known one re-sent with fresh IO. Either way the location is not this report's.
        has_fix = position.get("valid") is not False and position.get("outdated") is not True
        if has_fix:
            for key, field in (("latitude", "lat"), ("longitude", "lon"), ("course", "heading_deg")):
                if key in position:
                    values[field] = position[key]
            speed = position.get("speed")
            if isinstance(speed, int | float) and not isinstance(speed, bool):
                values["speed_kmh"] = speed * KMH_PER_KNOT
            elif speed is not None:
                values["speed_kmh"] = speed  # not a number: the feed schema names it
        attributes = position.get("attributes")
        if isinstance(attributes, dict):
            for key, field in _ATTRIBUTES.items():
                if key in attributes:
                    values[field] = attributes[key]
        if not values:
            raise RejectedMessage("no_values", "the position has no usable fix and no ignition/door/passengers")
        # fixTime is when the GPS measured the position; without a fix the report's own time is deviceTime.
        order = ("fixTime", "deviceTime") if has_fix else ("deviceTime", "fixTime")
        time_ns = received_ns
        for key in order:
            if position.get(key) is not None:
                time_ns = time_to_ns(position[key], f"position.{key}")
                break
        return RawReading(DeviceRef(device_id=device_id), values, time_ns)
