"""MemorySink: the in-process sink for unit tests, with switches to simulate an unavailable or refusing store.

It keeps InfluxDB's semantics (upsert by series and time with field merge, field type fixed by the first write,
partial writes: the good points of a refused batch are stored) so the contract suite runs against it too.

    sink = MemorySink()
    sink.unavailable = True           # every write/ping fails (SinkUnavailable / False)
    sink.fail_next = 2                # the next 2 writes fail with SinkUnavailable, then it recovers
    sink.reject_if = lambda p: "bad" if p.fields.get("x") == -1 else None   # refuse some points (SinkRejected)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from collectors.errors import SinkRejected, SinkUnavailable
from collectors.sinks.base import field_type, point_problem, series_key
from core.model import FieldValue, Point

__all__ = ["MemorySink"]


class MemorySink:
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.unavailable = False
        self.fail_next = 0
        self.reject_if: Callable[[Point], str | None] | None = None
        self.batches: list[list[Point]] = []  # every accepted write call, in order (what the store saw)
        self.write_calls = 0
        self.closed = False
        self._rows: dict[tuple[str, str, int], Point] = {}
        self._types: dict[tuple[str, str], str] = {}

    async def write(self, points: Sequence[Point]) -> None:
        self.write_calls += 1
        if self.closed:
            raise SinkUnavailable(f"{self.name}: closed")
        if self.unavailable:
            raise SinkUnavailable(f"{self.name}: unavailable (simulated)")
        if self.fail_next > 0:
            self.fail_next -= 1
            raise SinkUnavailable(f"{self.name}: unavailable (simulated, {self.fail_next} more)")
        bad: list[int] = []
        reasons: list[str] = []
        accepted: list[Point] = []
        for i, p in enumerate(points):
            reason = point_problem(p) or (self.reject_if(p) if self.reject_if else None) or self._type_conflict(p)
            if reason:
                bad.append(i)
                reasons.append(reason)
                continue
            self._store(p)
            accepted.append(p)
        if accepted:
            self.batches.append(accepted)
        if bad:
            raise SinkRejected(f"{self.name}: partial write: {reasons[0]} dropped={len(bad)}", bad_indexes=bad)

    def _type_conflict(self, p: Point) -> str | None:
        for k, v in p.fields.items():
            known = self._types.get((p.measurement, k))
            if known is not None and known != field_type(v):
                return (
                    f"field type conflict: input field {k!r} on measurement {p.measurement!r} "
                    f"is type {field_type(v)}, already exists as type {known}"
                )
        return None

    def _store(self, p: Point) -> None:
        for k, v in p.fields.items():
            self._types.setdefault((p.measurement, k), field_type(v))
        tags = {k: v for k, v in p.tags.items() if v}
        key = (p.measurement, series_key(tags), p.time_ns)
        old = self._rows.get(key)
        fields: dict[str, FieldValue] = dict(old.fields) if old else {}
        fields.update(p.fields)
        self._rows[key] = Point(p.measurement, tags, fields, p.time_ns)

    async def ping(self) -> bool:
        return not self.unavailable and not self.closed

    async def close(self) -> None:
        self.closed = True

    # --- read API (same as SQLiteSink) ---
    def query(
        self,
        measurement: str,
        since_ns: int | None = None,
        until_ns: int | None = None,
        tags: dict[str, str] | None = None,
    ) -> list[Point]:
        out = [
            p
            for (m, _, t), p in self._rows.items()
            if m == measurement
            and (since_ns is None or t >= since_ns)
            and (until_ns is None or t < until_ns)
            and all(p.tags.get(k) == v for k, v in (tags or {}).items())
        ]
        out.sort(key=lambda p: (p.time_ns, series_key(p.tags)))
        return out

    def count(self, measurement: str, device_id: str | None = None) -> int:
        return len(self.query(measurement, tags={"device_id": device_id} if device_id else None))

    def latest(self, measurement: str, device_id: str | None = None, limit: int = 1) -> list[Point]:
        points = self.query(measurement, tags={"device_id": device_id} if device_id else None)
        return list(reversed(points[-limit:])) if limit > 0 else []
