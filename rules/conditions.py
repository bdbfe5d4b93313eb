"""Evaluating conditions against one reading, with the per-device memory some kinds need.

`evaluate` returns a `Result`: `ok` is True / False, or None when it cannot be known (a field is missing,
a threshold is unresolved, too little history for a rate). Unknown never fires and never clears.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from core.model import DeviceInfo, Reading
from core.time import NS, is_thai_holiday
from rules.model import (
    Absent,
    All,
    AnyOf,
    Compare,
    Geofence,
    Not,
    Op,
    Range,
    Rate,
    RuleSet,
    Schedule,
    ScheduleSpec,
    ThresholdConfig,
    ThresholdRef,
    walk,
)
from rules.timeutil import to_bangkok

_ONE_DAY = timedelta(days=1)

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(slots=True)
class Result:
    ok: bool | None
    value: float | None = None
    threshold: float | None = None


@dataclass(slots=True)
class DeviceMemory:
    """What the engine remembers per device between readings (in memory; rebuilt from new data after restart)."""

    history: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)
    since: dict[int, int] = field(default_factory=dict)  # id(geofence spec) -> first time seen inside
    last_seen_ns: int | None = None
    last_lat: float | None = None
    last_lon: float | None = None


def history_windows(ruleset: RuleSet) -> dict[str, float]:
    """Per field, the longest rate window any rule needs (seconds)."""
    out: dict[str, float] = {}
    for rule in ruleset.rules:
        conds = walk(rule.when) + (walk(rule.clear) if rule.clear is not None else [])
        for c in conds:
            if isinstance(c, Rate):
                out[c.rate.field] = max(out.get(c.rate.field, 0.0), c.rate.window)
    return out


# A rate's series keeps its older samples at least window / RATE_SAMPLE_STEPS apart (30 min: 15 s) and its newest
# sample at the latest reading (a rate is judged at it), so the memory per device and field stays about
# RATE_SAMPLE_STEPS samples whatever the device's pace: a gauge sending every second would otherwise keep 1,800
# per 30 min window, as would a backlog drained at once (300,000 readings of 1,000 gauges: +35 MB). A rate then
# starts within one step of the window's start; devices sending every 15 s or slower keep every reading.
RATE_SAMPLE_STEPS = 120


def remember(memory: DeviceMemory, reading: Reading, windows: dict[str, float]) -> None:
    memory.last_seen_ns = max(memory.last_seen_ns or 0, reading.time_ns)
    t_ns = reading.time_ns
    for name, window in windows.items():
        v = reading.fields.get(name)
        if not _is_number(v):
            continue
        dq = memory.history.setdefault(name, deque())
        if dq and t_ns <= dq[-1][0]:
            continue  # out of order or duplicate: rates need a monotonic series
        sample = (t_ns, float(v))  # type: ignore[arg-type]
        if len(dq) >= 2 and dq[-1][0] - dq[-2][0] < window * NS / RATE_SAMPLE_STEPS:
            dq[-1] = sample  # the newest sample, too close to the one before to be kept, moves to this reading
        else:
            dq.append(sample)
        horizon = t_ns - int(window * NS) - NS
        while len(dq) > 2 and dq[1][0] <= horizon:
            dq.popleft()


def _is_number(v: Any) -> bool:
    kind = type(v)  # exact-type checks first: this runs several times per reading per rule
    if kind is float:
        return math.isfinite(v)
    if kind is int:
        return True
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def resolve_threshold(
    ref: ThresholdRef, device: DeviceInfo, thresholds: ThresholdConfig, reading: Reading | None = None
) -> float | None:
    """device thresholds > reading field > device site > profile > district > city > default (then × scale)."""
    value: Any = None
    if ref.param is not None and ref.param in device.thresholds:
        value = device.thresholds[ref.param]
    if value is None and ref.field is not None and reading is not None:
        value = reading.fields.get(ref.field)
    if value is None and ref.site is not None:
        value = device.site.get(ref.site)
    if value is None and ref.param is not None:
        for table in (
            thresholds.profile.get(device.profile or "", {}),
            thresholds.district.get(device.city, {}).get(device.district, {}),
            thresholds.city.get(device.city, {}),
        ):
            if ref.param in table:
                value = table[ref.param]
                break
    if value is None:
        value = ref.default
    if not _is_number(value):
        return None
    return float(value) * ref.scale


def resolve_param(param: str, device: DeviceInfo, thresholds: ThresholdConfig, default: float) -> float:
    got = resolve_threshold(ThresholdRef(param=param, default=default), device, thresholds)
    return default if got is None else got


@dataclass(slots=True)
class Context:
    reading: Reading
    device: DeviceInfo
    thresholds: ThresholdConfig
    memory: DeviceMemory

    def get(self, name: str) -> Any:
        if name in self.reading.fields:
            return self.reading.fields[name]
        return self.reading.tags.get(name)


def _operand(value: Any, ctx: Context) -> Any:
    if isinstance(value, ThresholdRef):
        return resolve_threshold(value, ctx.device, ctx.thresholds, ctx.reading)
    return value


def _compare(left: Any, op: Op, right: Any) -> bool | None:
    if left is None or right is None:
        return None
    if _is_number(left) and _is_number(right):
        return _OPS[op](float(left), float(right))
    if isinstance(left, bool) and isinstance(right, bool) and op in ("==", "!="):
        return _OPS[op](left, right)
    if isinstance(left, str) and isinstance(right, str):
        return _OPS[op](left, right) if op in ("==", "!=") else None
    if op in ("==", "!="):  # e.g. bool vs number: never equal
        return op == "!="
    return None


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    return float(v) if _is_number(v) else None



def in_schedule(spec: ScheduleSpec, t_ns: int) -> bool:
    """Whether `t_ns` is inside the weekly window, evaluated in Asia/Bangkok."""
    local = to_bangkok(t_ns)
    now_t = local.time()
    start, end = spec.start, spec.end
    if end is None or start < end:
        in_window = now_t >= start and (end is None or now_t < end)
        day = local.date()
    elif start == end:
        in_window, day = True, local.date()
    else:  # crosses midnight: 22:00–06:00 belongs to the day it started
        if now_t >= start:
            in_window, day = True, local.date()
        elif now_t < end:
            in_window, day = True, (local - _ONE_DAY).date()
        else:
            in_window, day = False, local.date()
    if not in_window or day.weekday() not in spec.days:
        return False
    if spec.holidays == "any":
        return True
    holiday = is_thai_holiday(day)
    return holiday if spec.holidays == "only" else not holiday


def _rate_of(spec: Any, ctx: Context) -> float | None:
    """The rate of change at this reading, or None (too little history, or this reading not in the series)."""
    dq = ctx.memory.history.get(spec.field)
    if not dq or len(dq) < 2:
        return None
    t_last, v_last = dq[-1]
    if t_last != ctx.reading.time_ns:
        return None
    horizon = t_last - int(spec.window * NS)
    first = next(((t, v) for t, v in dq if t >= horizon), None)
    if first is None or first[0] == t_last:
        return None
    span_s = (t_last - first[0]) / NS
    min_span = spec.min_span if spec.min_span is not None else spec.window / 2
    if span_s < min_span:
        return None
    return float((v_last - first[1]) / span_s * spec.per)


def _rate(spec: Any, ctx: Context) -> Result:
    rate = _rate_of(spec, ctx)
    if rate is None:
        return Result(None)
    threshold = _operand(spec.value, ctx)
    return Result(_compare(rate, spec.op, threshold), rate, _num(threshold))


def _all_of(results: list[Result]) -> Result:
    value = next((r for r in results if r.value is not None), Result(None))
    if any(r.ok is False for r in results):
        return Result(False, value.value, value.threshold)
    if any(r.ok is None for r in results):
        return Result(None, value.value, value.threshold)
    return Result(True, value.value, value.threshold)


def _any_of(results: list[Result]) -> Result:
    hit = next((r for r in results if r.ok), None)
    if hit is not None:
        return hit
    value = next((r for r in results if r.value is not None), Result(None))
    if any(r.ok is None for r in results):
        return Result(None, value.value, value.threshold)
    return Result(False, value.value, value.threshold)


def _negated(r: Result) -> Result:
    return Result(None if r.ok is None else not r.ok, r.value, r.threshold)


def evaluate(cond: Any, ctx: Context) -> Result:
    if isinstance(cond, Compare):
        spec = cond.compare
        left, right = ctx.get(spec.field), _operand(spec.value, ctx)
        return Result(_compare(left, spec.op, right), _num(left), _num(right))
    if isinstance(cond, Range):
        rs = cond.range
        v = ctx.get(rs.field)
        lo = _operand(rs.min, ctx) if rs.min is not None else None
        hi = _operand(rs.max, ctx) if rs.max is not None else None
        if not _is_number(v) or (rs.min is not None and lo is None) or (rs.max is not None and hi is None):
            return Result(None, _num(v))
        inside = (lo is None or v >= lo) and (hi is None or v <= hi)
        return Result(inside if rs.inside else not inside, float(v), _num(hi if hi is not None else lo))
    if isinstance(cond, Rate):
        return _rate(cond.rate, ctx)
    if isinstance(cond, Geofence):
        gs = cond.geofence
        lat, lon = ctx.get(gs.lat_field), ctx.get(gs.lon_field)
        if not (_is_number(lat) and _is_number(lon)):
            return Result(None)
        inside = gs.contains(float(lat), float(lon))
        key = id(gs)
        if gs.mode == "outside":
            ctx.memory.since.pop(key, None)
            return Result(not inside)
        if gs.mode == "inside":
            return Result(inside)
        if not inside:
            ctx.memory.since.pop(key, None)
            return Result(False, 0.0, gs.dwell)
        entered = ctx.memory.since.setdefault(key, ctx.reading.time_ns)
        dwell_s = (ctx.reading.time_ns - entered) / NS
        return Result(dwell_s >= gs.dwell, dwell_s, gs.dwell)
    if isinstance(cond, Schedule):
        return Result(in_schedule(cond.schedule, ctx.reading.time_ns))
    if isinstance(cond, All):
        return _all_of([evaluate(c, ctx) for c in cond.all])  # evaluate all: stateful kinds see every reading
    if isinstance(cond, AnyOf):
        return _any_of([evaluate(c, ctx) for c in cond.any])
    if isinstance(cond, Not):
        return _negated(evaluate(cond.not_, ctx))
    if isinstance(cond, Absent):
        return Result(False)  # data arrived: an absence is over
    raise TypeError(f"unknown condition {type(cond).__name__}")


Evaluator = Callable[[Context], Result]
_MISSING = object()


def bind(cond: Any, device: DeviceInfo, thresholds: ThresholdConfig) -> Evaluator:
    """`evaluate(cond, ·)` for one device: the same Results, with the thresholds that depend only on the device
    and the rule set resolved now (not per reading) and no dispatch on the condition's kind per reading. The
    engine binds a rule's conditions when it first sees a device (again when the directory hands it a changed
    device: a new DeviceInfo), so a reading costs a field lookup and a comparison per compare."""
    if isinstance(cond, Compare):
        bound = _bind_compare(cond.compare, device, thresholds)
        if bound is not None:
            return bound
    elif isinstance(cond, Rate):
        bound = _bind_rate(cond.rate, device, thresholds)
        if bound is not None:
            return bound
    elif isinstance(cond, All):
        every = [bind(c, device, thresholds) for c in cond.all]
        return lambda ctx: _all_of([part(ctx) for part in every])
    elif isinstance(cond, AnyOf):
        either = [bind(c, device, thresholds) for c in cond.any]
        return lambda ctx: _any_of([part(ctx) for part in either])
    elif isinstance(cond, Not):
        inner = bind(cond.not_, device, thresholds)
        return lambda ctx: _negated(inner(ctx))
    return lambda ctx: evaluate(cond, ctx)


def _static_operand(value: Any, device: DeviceInfo, thresholds: ThresholdConfig) -> tuple[bool, Any]:
    """(True, the operand's value) when it does not depend on the reading; (False, None) when it does."""
    if not isinstance(value, ThresholdRef):
        return True, value
    if value.field is not None:  # a field of the reading may give it
        return False, None
    return True, resolve_threshold(value, device, thresholds)


def _bind_compare(spec: Any, device: DeviceInfo, thresholds: ThresholdConfig) -> Evaluator | None:
    static, right = _static_operand(spec.value, device, thresholds)
    if not static:
        return None
    name, op_name, right_num = spec.field, spec.op, _num(right)

    def compare_value(ctx: Context) -> Result:
        v = ctx.get(name)
        return Result(_compare(v, op_name, right), _num(v), right_num)

    if not _is_number(right):
        return compare_value
    op, r = _OPS[op_name], float(right)

    def compare_number(ctx: Context) -> Result:
        v = ctx.reading.fields.get(name, _MISSING)
        if type(v) is float and v - v == 0.0:  # a finite float, the usual case (inf - inf and nan are nan)
            return Result(op(v, r), v, r)
        return compare_value(ctx)

    return compare_number


def _bind_rate(spec: Any, device: DeviceInfo, thresholds: ThresholdConfig) -> Evaluator | None:
    static, threshold = _static_operand(spec.value, device, thresholds)
    if not static:
        return None
    op_name, threshold_num = spec.op, _num(threshold)

    def rate(ctx: Context) -> Result:
        value = _rate_of(spec, ctx)
        if value is None:
            return Result(None)
        return Result(_compare(value, op_name, threshold), value, threshold_num)

    return rate


def heartbeat_s(spec: Any, device: DeviceInfo, thresholds: ThresholdConfig) -> float:
    base = (
        float(device.heartbeat_s) if device.heartbeat_s else resolve_param(spec.param, device, thresholds, spec.default)
    )
    return base * spec.factor
