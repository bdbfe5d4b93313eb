"""InfluxDB line protocol encoding: the hot path from `Point` to the bytes of a `/write` body.

    measurement[,tag_key=tag_value...] field_key=field_value[,...] timestamp_ns

Escaping (InfluxDB 1.x-3.x): measurement — comma and space; tag keys, tag values and field keys — comma,
equals sign and space; string field values — double quote and backslash. Thai (any UTF-8) text passes through.

- Tags are sorted by key (the order InfluxDB prefers) and empty tag values are left out (InfluxDB rejects them).
- Floats are written with `repr(float(v))`, so an integral float is `12.0` and stays a float; NaN and ±inf
  have no line-protocol form and are refused. Ints get the `i` suffix (int64 range), bools `true`/`false`.
- Names and tag values cannot carry a newline, carriage return or tab, nor a backslash at their end or before
  a comma, equals sign or space (it would escape the separator or the escape that follows): such points are
  refused with `LineProtocolError` instead of being silently changed. String field values may contain any character.

Escaped names and tag values are memoised in bounded dicts, and so is each series' head (measurement and
sorted tags): devices, cities and field names repeat, so the common case is one dict lookup per point's tags.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from core.errors import NakhonError
from core.model import Point

__all__ = ["LineProtocolError", "encode_batch", "encode_point"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_CACHE_LIMIT = 50_000

_ESC_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ "})
_ESC_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_ESC_STRING = str.maketrans({'"': '\\"', "\\": "\\\\"})
_FORBIDDEN = ("\n", "\r", "\t")
_AMBIGUOUS_BACKSLASH = re.compile(r"\\([,= ]|$)")


class LineProtocolError(NakhonError, ValueError):
    """A point that has no faithful line-protocol form (NaN, empty name, newline in a tag, ...).

    `index` is the point's position in the batch when raised by `encode_batch`.
    """

    def __init__(self, reason: str, *, measurement: str | None = None, key: str | None = None) -> None:
        where = ""
        if measurement:
            where = f" (measurement {measurement!r}" + (f", key {key!r})" if key is not None else ")")
        super().__init__(f"{reason}{where}")
        self.reason = reason
        self.measurement = measurement
        self.key = key
        self.index: int | None = None


def _check_name(s: str, what: str, measurement: str | None) -> None:
    if not s:
        raise LineProtocolError(f"empty {what}", measurement=measurement, key=s)
    for ch in _FORBIDDEN:
        if ch in s:
            raise LineProtocolError(f"{what} contains a control character {ch!r}", measurement=measurement, key=s)
    if "\\" in s and _AMBIGUOUS_BACKSLASH.search(s):
        raise LineProtocolError(
            f"{what} has a backslash at its end or before ',', '=' or ' ' (ambiguous once escaped)",
            measurement=measurement,
            key=s,
        )


_measurement_cache: dict[str, str] = {}
_key_cache: dict[str, str] = {}


def _measurement(s: str) -> str:
    out = _measurement_cache.get(s)
    if out is None:
        if type(s) is not str:
            raise LineProtocolError(f"measurement must be a str, not {type(s).__name__}")
        _check_name(s, "measurement", None)
        if s[0] == "#":
            raise LineProtocolError("measurement starts with '#' (a comment in line protocol)", measurement=s)
        out = s.translate(_ESC_MEASUREMENT)
        if len(_measurement_cache) >= _CACHE_LIMIT:
            _measurement_cache.clear()
        _measurement_cache[s] = out
    return out


def _key(s: str, what: str, measurement: str) -> str:
    """Escape a tag key, tag value or field key (memoised: they repeat)."""
    out = _key_cache.get(s)
    if out is None:
        if type(s) is not str:
            raise LineProtocolError(f"{what} must be a str, not {type(s).__name__}", measurement=measurement)
        _check_name(s, what, measurement)
        out = s.translate(_ESC_KEY)
        if len(_key_cache) >= _CACHE_LIMIT:
            _key_cache.clear()
        _key_cache[s] = out
    return out


def _field_value(v: object, key: str, measurement: str) -> str:
    """The slow path for field values that are not exactly float/int/str/bool (subclasses, numpy scalars)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return _int_value(int(v), key, measurement)
    if isinstance(v, float) or hasattr(v, "__float__"):
        return _float_value(float(v), key, measurement)  # type: ignore[arg-type]
    if isinstance(v, str):
        return '"' + str(v).translate(_ESC_STRING) + '"'
    raise LineProtocolError(f"unsupported field type {type(v).__name__}", measurement=measurement, key=key)


def _float_value(v: float, key: str, measurement: str) -> str:
    if v - v != 0.0:  # NaN or ±inf
        raise LineProtocolError(f"field value {v!r} is not finite", measurement=measurement, key=key)
    return repr(v)


def _int_value(v: int, key: str, measurement: str) -> str:
    if v < _INT64_MIN or v > _INT64_MAX:
        raise LineProtocolError("integer field value out of int64 range", measurement=measurement, key=key)
    return f"{v}i"


_head_cache: dict[tuple[object, ...], str] = {}
_HEAD_CACHE_LIMIT = 20_000  # a series per entry (~0.5 kB): devices × their extra tag values, and alert series


def _head(measurement: str, tags: dict[str, str]) -> str:
    """`measurement,tag=value,...` (sorted tags, empty values left out), memoised per series."""
    series = (measurement, *tags.items())
    head = _head_cache.get(series)
    if head is not None:
        return head
    head = _measurement(measurement)
    if tags:
        key_cache = _key_cache
        for k in sorted(tags):
            v = tags[k]
            if not v:
                continue  # InfluxDB rejects empty tag values: omit the tag
            ek = key_cache.get(k)
            if ek is None:
                ek = _key(k, "tag key", measurement)
            ev = key_cache.get(v)
            if ev is None:
                ev = _key(v, "tag value", measurement)
            head = f"{head},{ek}={ev}"
    if len(_head_cache) >= _HEAD_CACHE_LIMIT:
        _head_cache.clear()
    _head_cache[series] = head
    return head


def encode_point(p: Point) -> str:
    """One point as one line of line protocol (no trailing newline)."""
    measurement = p.measurement
    head = _head(measurement, p.tags)
    parts: list[str] = []
    for fk, fv in p.fields.items():
        ek = _key_cache.get(fk)
        if ek is None:
            ek = _key(fk, "field key", measurement)
        t = type(fv)
        if t is float:
            if fv - fv != 0.0:  # type: ignore[operator]  # NaN or ±inf
                raise LineProtocolError(f"field value {fv!r} is not finite", measurement=measurement, key=fk)
            parts.append(f"{ek}={fv!r}")
        elif t is int:
            if fv < _INT64_MIN or fv > _INT64_MAX:  # type: ignore[operator]
                raise LineProtocolError("integer field value out of int64 range", measurement=measurement, key=fk)
            parts.append(f"{ek}={fv}i")
        elif t is str:
            sv: str = fv  # type: ignore[assignment]
            if '"' in sv or "\\" in sv:
                sv = sv.translate(_ESC_STRING)
            parts.append(f'{ek}="{sv}"')
        elif t is bool:
            parts.append(f"{ek}=true" if fv else f"{ek}=false")
        else:
            parts.append(f"{ek}={_field_value(fv, fk, measurement)}")
    if not parts:
        raise LineProtocolError("point has no fields", measurement=measurement)
    ts = p.time_ns
    if type(ts) is not int:
        raise LineProtocolError(f"time_ns must be an int, not {type(ts).__name__}", measurement=measurement)
    return f"{head} {','.join(parts)} {ts}"


def encode_lines(points: Iterable[Point]) -> list[str]:
    """Each point's line; on a bad point raises `LineProtocolError` with `index` set."""
    pts = points if isinstance(points, Sequence) else list(points)
    try:
        return [encode_point(p) for p in pts]
    except LineProtocolError:
        for i, p in enumerate(pts):  # slow path: find which one, for the error's context
            try:
                encode_point(p)
            except LineProtocolError as exc:
                exc.index = i
                raise exc from None
        raise


def encode_batch(points: Iterable[Point]) -> bytes:
    """A `/write` body: the points' lines joined by newlines, UTF-8 encoded."""
    return "\n".join(encode_lines(points)).encode("utf-8")
