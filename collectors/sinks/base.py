"""The sink seam: one small interface, a real implementation (InfluxDB, SQLite) and an in-process one (memory).

Contract of `Sink.write(points)` — one attempt, no retries inside the sink:
- returns only once the store accepted the batch durably (InfluxDB answered 204; SQLite committed with
  `synchronous=FULL`);
- raises `SinkUnavailable` for retryable failures (connection refused/reset, timeout, 5xx, 429);
- raises `SinkRejected` for a refusal of (some of) the points themselves (4xx: bad line protocol, field type
  conflict, partial write). The points that were not refused MAY have been written: re-writing them is
  idempotent (same series and timestamp overwrite). `bad_indexes` names the refused points when known;
- raises `SinkConfigError` (a `SinkRejected`) when the store refuses every write for a reason that is not the
  points' fault (401/403 bad credentials, 404 database not found): retrying soon does not help and quarantining
  the points would be wrong, so the batch writer treats it as the sink being down (it spools).
Error messages carry context (sink name, status, the server's message) and never a password or token.

Writing the same (measurement, tag set, time) twice stores one point whose fields are the union of both writes,
later values winning — InfluxDB's semantics, which every sink here reproduces. A field keeps the type of its
first write in a measurement (InfluxDB: per shard); a later write of another type is refused for that point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from collectors.errors import SinkRejected
from core.model import FieldValue, Point

_ESC_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})

__all__ = ["Sink", "SinkConfigError", "field_type", "point_problem", "series_key"]


@runtime_checkable
class Sink(Protocol):
    """Where points are stored. Implementations: InfluxV1Sink, SQLiteSink, MemorySink."""

    name: str

    async def write(self, points: Sequence[Point]) -> None:
        """Store `points` (one attempt). See the module docstring for the error contract."""
        ...

    async def ping(self) -> bool:
        """True when the store answers (cheap; never raises)."""
        ...

    async def close(self) -> None:
        """Release connections/files. Idempotent."""
        ...


class SinkConfigError(SinkRejected):
    """The store refuses every write (credentials, missing database): an operator must act; not the points' fault."""


def series_key(tags: dict[str, str]) -> str:
    """Canonical series key of a tag set: sorted `k=v` pairs, empty values dropped (as InfluxDB stores them)."""
    return ",".join(f"{k.translate(_ESC_KEY)}={v.translate(_ESC_KEY)}" for k, v in sorted(tags.items()) if v)


def field_type(value: FieldValue) -> str:
    """InfluxDB's name of a field value's type: float, integer, boolean or string."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string"


def point_problem(p: Point) -> str | None:
    """Why an embedded store should refuse this point (what InfluxDB or the line protocol would refuse), or None."""
    if not p.measurement:
        return "empty measurement"
    if not p.fields:
        return "point has no fields"
    if type(p.time_ns) is not int:
        return "time_ns must be an int"
    for k, v in p.fields.items():
        if not k:
            return "empty field key"
        if isinstance(v, float) and not math.isfinite(v):
            return f"field {k!r}: value {v!r} is not finite"
        if not isinstance(v, bool | int | float | str):
            return f"field {k!r}: unsupported type {type(v).__name__}"
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
            return f"field {k!r}: integer out of int64 range"
    return None
