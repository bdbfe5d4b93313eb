"""nakhon's own JSON format: canonical field names, topic `{prefix}/{city}/{feed}/{device_id}`.

This is the hot path: orjson, one dict copy, no pydantic, no regex unless `ts` is a string.
"""

from __future__ import annotations

from typing import Any

import orjson

from collectors.errors import RejectedMessage
from collectors.formats._common import EPOCH_MS_MAX, EPOCH_S_MAX, json_type, time_to_ns
from core.feeds import FEEDS
from core.model import DeviceRef, RawReading

_FEEDS = frozenset(FEEDS)


class NativeFormat:
    """`{prefix}/{city}/{feed}/{device_id}` + a JSON object of canonical names with an optional `ts`."""

    name = "native"

    def __init__(self, prefix: str = "city") -> None:
        prefix = prefix.strip("/")
        if not prefix or "+" in prefix or "#" in prefix:
            raise ValueError(f"native: prefix {prefix!r} must be a non-empty topic path without wildcards")
        self.prefix = prefix
        self._prefix_parts = prefix.split("/")
        self._n = len(self._prefix_parts) + 3

    @property
    def topic_filter(self) -> str:
        """The MQTT subscription that covers this format's topics."""
        return f"{self.prefix}/+/+/+"

    def parse(self, topic: str, payload: bytes, received_ns: int) -> list[RawReading]:
        parts = topic.split("/")
        if len(parts) != self._n or parts[: self._n - 3] != self._prefix_parts:
            raise RejectedMessage("bad_topic", f"topic {topic!r} is not {self.prefix}/{{city}}/{{feed}}/{{device_id}}")
        city, feed, device_id = parts[-3], parts[-2], parts[-1]
        if not city or not device_id:
            raise RejectedMessage("bad_topic", f"topic {topic!r} has an empty city or device id")
        if feed not in _FEEDS:
            raise RejectedMessage(
                "bad_topic",
                f"unknown feed {feed!r} in topic {topic!r}; known feeds: {', '.join(FEEDS)}",
                device_id=device_id,
            )
        try:
            doc: Any = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise RejectedMessage(
                "bad_json", f"payload is not valid JSON: {exc}", device_id=device_id, feed=feed
            ) from None
        if type(doc) is not dict:
            raise RejectedMessage(
                "bad_json",
                f"payload must be a JSON object of field names to values, got a JSON {json_type(doc)}",
                device_id=device_id,
                feed=feed,
            )
        ts = doc.pop("ts", None)
        if not doc:
            raise RejectedMessage(
                "no_values", "the JSON object has no fields besides 'ts'", device_id=device_id, feed=feed
            )
        if ts is None:
            time_ns = received_ns
        elif type(ts) is int and EPOCH_S_MAX <= ts < EPOCH_MS_MAX:
            time_ns = ts * 1_000_000  # epoch milliseconds, what devices send most: epoch_to_ns's answer, inline
        else:
            try:
                time_ns = time_to_ns(ts, "ts")
            except RejectedMessage as exc:
                exc.device_id, exc.feed = device_id, feed
                raise
        return [RawReading(DeviceRef(device_id=device_id), doc, time_ns, topic_city=city, topic_feed=feed)]
