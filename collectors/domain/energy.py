"""Energy-meter derived values: interval energy, time-of-use period, CO2e, 15-minute demand, power factor.

Sources (/work/shared/reference/thailand.md, "Energy"):

* TOU (MEA and PEA, same schedule): on-peak Mon–Fri 09:00–22:00 Asia/Bangkok; off-peak Mon–Fri 22:00–09:00
  and all day on Saturdays, Sundays, Labour Day (1 May) and public holidays (`holidays.Thailand`).
* Billing demand is the maximum 15-minute integrated demand.
* Power-factor charge applies when reactive demand exceeds 61.97 % of kW demand (≈ PF below 0.85).
* Grid emission factor, Thailand Greenhouse Gas Management Organization (TGO): 0.4750 kgCO2e/kWh (Scope 2)
  from 1 January 2026, https://www.nationthailand.com/news/policy/40059019 — configurable per year.

* TOU holidays: PEA's TOU notice (pea.co.th, "คำชี้แจงเกี่ยวกับอัตราค่าไฟฟ้า TOU") makes off-peak all day on
  Saturdays, Sundays, National Labour Day and regular public holidays, "ไม่รวมวันหยุดชดเชย" (substitution days
  excluded); MEA publishes its Off-Peak day list per year (mea.or.th/profile/110/268), including special
  cabinet holidays in some years. So substitution days are on-peak, and per-year exceptions are configuration
  (`TouCalendar(extra_off_peak=..., extra_on_peak=...)`, `[domain] tou_off_peak_days / tou_on_peak_days`).

An interval crossing a TOU boundary is split pro rata in time (`interval_on_peak_kwh`, `interval_off_peak_kwh`).

15-minute demand method: blocks are fixed clock quarter-hours (:00, :15, :30, :45; Bangkok is a whole-hour
offset from UTC, so UTC and local blocks coincide), block = (start, start + 15 min]. Each interval's energy is
attributed to the blocks it spans in proportion to time (constant power inside an interval, i.e. the register
is interpolated linearly between readings). `demand_15min_kw` is set on the reading whose interval completes a
block: that block's energy / 0.25 h — the integrated demand a billing meter records — (the largest, if one
interval completes several). A block only partly counted (the first after a meter was first seen or reset) is
not reported: it would under-read. Billing demand is the maximum of these values over the month.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal

from collectors.domain.base import restorable
from collectors.errors import RejectedMessage
from core.model import DeviceInfo, Reading
from core.time import BANGKOK, BANGKOK_UTC_OFFSET_S, thai_holiday_names

TouPeriod = Literal["on_peak", "off_peak"]
ON_PEAK_START_HOUR = 9
ON_PEAK_END_HOUR = 22  # exclusive: 22:00 itself is off-peak

#: TGO grid emission factor by first year of validity (kgCO2e/kWh). Source in the module docstring.
DEFAULT_EMISSION_FACTORS: dict[int, float] = {2026: 0.4750}

#: Reactive demand above this fraction of kW demand incurs the power-factor charge (MEA/PEA).
REACTIVE_RATIO_LIMIT = 0.6197

DEMAND_BLOCK_S = 15 * 60
_NS = 1_000_000_000


def bangkok_time(time_ns: int) -> datetime:
    """UTC nanoseconds -> aware datetime in Asia/Bangkok."""
    # integer seconds: a float of today's epoch in ns rounds 08:59:59.999999999 up to 09:00
    seconds, ns = divmod(time_ns, _NS)
    return datetime.fromtimestamp(seconds, tz=BANGKOK).replace(microsecond=ns // 1000)


def _substitution_only(names: list[str]) -> bool:
    # `holidays` names a substitution day "<holiday> (in lieu)" (วันหยุดชดเชย) in en_US
    return bool(names) and all("(in lieu)" in name for name in names)


_DAY_NS = 86_400 * _NS
_BANGKOK_OFFSET_NS = BANGKOK_UTC_OFFSET_S * _NS
_ON_PEAK_START_NS = ON_PEAK_START_HOUR * 3600 * _NS
_ON_PEAK_END_NS = ON_PEAK_END_HOUR * 3600 * _NS
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class TouCalendar:
    """MEA/PEA off-peak days: weekends, National Labour Day (1 May) and Thai public holidays except
    substitution days, plus per-year exceptions (`extra_off_peak` days announced as off-peak, `extra_on_peak`
    holidays the utility bills as ordinary weekdays).

    Hot path: integer arithmetic on Bangkok days (UTC+7, no DST) and one cached lookup per day, no datetime."""

    def __init__(self, extra_off_peak: frozenset[date] = frozenset(), extra_on_peak: frozenset[date] = frozenset()):
        self.extra_off_peak = frozenset(extra_off_peak)
        self.extra_on_peak = frozenset(extra_on_peak)
        self._days: dict[int, bool] = {}  # Bangkok day number since 1970-01-01 -> off-peak all day

    def is_off_peak_day(self, day: date) -> bool:
        if day in self.extra_off_peak:
            return True
        if day in self.extra_on_peak:
            return False
        if day.weekday() >= 5 or (day.month, day.day) == (5, 1):
            return True
        names = thai_holiday_names(day)
        return bool(names) and not _substitution_only(names)

    def _off_peak(self, day_number: int) -> bool:
        known = self._days.get(day_number)
        if known is None:
            known = self.is_off_peak_day(date.fromordinal(_EPOCH_ORDINAL + day_number))
            if len(self._days) > 20_000:  # bounded: ~50 years of days
                self._days.clear()
            self._days[day_number] = known
        return known

    def period(self, time_ns: int) -> TouPeriod:
        local = time_ns + _BANGKOK_OFFSET_NS
        day = local // _DAY_NS
        if self._off_peak(day):
            return "off_peak"
        into = local - day * _DAY_NS
        return "on_peak" if _ON_PEAK_START_NS <= into < _ON_PEAK_END_NS else "off_peak"

    def on_peak_ns(self, t0_ns: int, t1_ns: int) -> int:
        """Nanoseconds of (t0, t1] that are on-peak (one step per Bangkok day the interval touches)."""
        l0, l1 = t0_ns + _BANGKOK_OFFSET_NS, t1_ns + _BANGKOK_OFFSET_NS
        total = 0
        for day in range(l0 // _DAY_NS, l1 // _DAY_NS + 1):
            if not self._off_peak(day):
                midnight = day * _DAY_NS
                total += max(0, min(midnight + _ON_PEAK_END_NS, l1) - max(midnight + _ON_PEAK_START_NS, l0))
        return total


DEFAULT_TOU_CALENDAR = TouCalendar()


def is_off_peak_day(day: date, calendar: TouCalendar = DEFAULT_TOU_CALENDAR) -> bool:
    """Saturday, Sunday, Labour Day (1 May) or a Thai public holiday that is not a substitution day."""
    return calendar.is_off_peak_day(day)


def tou_period(time_ns: int, calendar: TouCalendar = DEFAULT_TOU_CALENDAR) -> TouPeriod:
    """MEA/PEA time-of-use period of a UTC-nanosecond instant: on-peak Mon–Fri 09:00–22:00 Bangkok time."""
    return calendar.period(time_ns)


def emission_factor(year: int, factors: Mapping[int, float] = DEFAULT_EMISSION_FACTORS) -> float:
    """Factor in force in `year`: the entry of the latest year <= `year`; before the first entry, the first one
    (we have no published earlier factor in the reference, so the oldest known value stands in)."""
    if not factors:
        raise ValueError("no emission factors configured")
    known = sorted(factors)
    applicable = [y for y in known if y <= year]
    return factors[applicable[-1] if applicable else known[0]]


def co2e_kg(interval_kwh: float, year: int, factors: Mapping[int, float] = DEFAULT_EMISSION_FACTORS) -> float:
    """Scope 2 emissions of an interval: kWh × the grid factor for the year."""
    return interval_kwh * emission_factor(year, factors)


#: A drop is a wrap only when both readings are this close (as a fraction of the register) to its end.
DEFAULT_WRAP_FRACTION = 0.01


def register_interval(
    previous_kwh: float, current_kwh: float, rollover_kwh: float | None, wrap_fraction: float = DEFAULT_WRAP_FRACTION
) -> float | None:
    """Energy between two readings of a cumulative register, or None when it cannot be known.

    * Rising register: the difference.
    * Rollover: the register wraps to zero at `rollover_kwh` (100000 for a 99999.9 display, 1000000 for a
      999999 one). A drop counts as a wrap only when the previous value was in the top `wrap_fraction` of the
      range and the new one in the bottom `wrap_fraction` (1 %: 950000 -> 0.5 on a 999999 register is a
      replacement, not 50000.5 kWh); then the energy is (rollover − previous) + current.
    * Any other drop is a meter reset or replacement: the energy used between the readings is lost with the
      old count, so None — never a negative interval, never the whole new register as one interval.
    """
    delta = current_kwh - previous_kwh
    if delta >= 0:
        return delta
    if (
        rollover_kwh is not None
        and rollover_kwh > 0
        and previous_kwh >= rollover_kwh * (1 - wrap_fraction)
        and current_kwh <= rollover_kwh * wrap_fraction
    ):
        return rollover_kwh - previous_kwh + current_kwh
    return None


def reactive_ratio(kw: float, kvar: float) -> float | None:
    """Reactive demand as a fraction of active demand (kvar / kW); None when kW is not positive."""
    return abs(kvar) / kw if kw > 0 else None


def power_factor_from_ratio(ratio: float) -> float:
    """PF = kW / kVA = 1 / sqrt(1 + (kvar/kW)²); the 61.97 % rule gives 1/sqrt(1 + 0.6197²) ≈ 0.85."""
    return 1.0 / math.sqrt(1.0 + ratio * ratio)


def excess_reactive_kvar(kw: float, kvar: float) -> float:
    """kvar above 61.97 % of kW, i.e. the part billed by the MEA/PEA power-factor charge (0 when within)."""
    return max(0.0, abs(kvar) - REACTIVE_RATIO_LIMIT * max(kw, 0.0))


def power_factor_charge_applies(kw: float, kvar: float) -> bool:
    """True when reactive demand exceeds 61.97 % of kW demand (≈ power factor below 0.85)."""
    return excess_reactive_kvar(kw, kvar) > 0


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class _MeterState:
    """Last register value and time; the open 15-minute block's energy; since when counting is unbroken."""

    __slots__ = ("block_kwh", "block_start_ns", "counted_since_ns", "register_kwh", "time_ns")

    def __init__(
        self,
        time_ns: int,
        register_kwh: float,
        block_start_ns: int | None = None,
        block_kwh: float = 0.0,
        counted_since_ns: int | None = None,
    ):
        self.time_ns = time_ns
        self.register_kwh = register_kwh
        self.block_start_ns = block_start_ns
        self.block_kwh = block_kwh
        self.counted_since_ns = time_ns if counted_since_ns is None else counted_since_ns

    def restart(self, time_ns: int, register_kwh: float) -> None:
        """A new register (reset, replacement, implausible jump): nothing before `time_ns` is counted."""
        self.time_ns, self.register_kwh = time_ns, register_kwh
        self.block_start_ns, self.block_kwh, self.counted_since_ns = None, 0.0, time_ns


def demand_block_start(time_ns: int) -> int:
    """Start (UTC ns) of the fixed 15-minute block holding `time_ns`; a reading at a block's end instant
    (e.g. 10:15:00) closes the previous block, so the block is (start, start + 15 min]."""
    block_ns = DEMAND_BLOCK_S * _NS
    return ((time_ns - 1) // block_ns) * block_ns


#: Intervals up to this are never judged implausible: 0.001 kWh of rounding between readings 1 ms apart
#: "implies" 3600 kW, yet no bill or replacement hides in 1 kWh.
IMPLAUSIBLE_MIN_KWH = 1.0

_BLOCK_NS = DEMAND_BLOCK_S * _NS
_BLOCK_H = DEMAND_BLOCK_S / 3600


def completed_block_demand(state: _MeterState, t0: int, t1: int, energy_kwh: float) -> float | None:
    """Spread `energy_kwh` used in (t0, t1] over the 15-minute blocks (constant power), close the blocks that
    end by t1 and return the largest completed block's demand in kW (None when none completed fully counted).
    Updates the open block in `state`. Constant work whatever the gap: the full blocks inside one interval
    all share its average power."""
    per_ns = energy_kwh / (t1 - t0)
    first = (t0 // _BLOCK_NS) * _BLOCK_NS  # block holding the start of (t0, t1]
    carried = state.block_kwh if state.block_start_ns == first else 0.0
    best: float | None = None
    first_end = first + _BLOCK_NS
    if first_end <= t1:
        if state.counted_since_ns <= first:
            best = (carried + per_ns * (first_end - t0)) / _BLOCK_H
        full = (t1 - first_end) // _BLOCK_NS
        if full > 0:  # wholly inside the interval, counted: average power
            average_kw = per_ns * _BLOCK_NS / _BLOCK_H
            best = average_kw if best is None else max(best, average_kw)
        open_start = first_end + full * _BLOCK_NS
        state.block_start_ns, state.block_kwh = open_start, per_ns * (t1 - open_start)
    else:
        state.block_start_ns, state.block_kwh = first, carried + energy_kwh
    return best


class EnergyEnricher:
    """Feed "energy": `interval_kwh`, `interval_on_peak_kwh`, `interval_off_peak_kwh`, `co2e_kg`,
    `demand_15min_kw` (when computable) and tag `tou` (always).

    Per-device state is the last register value and the open 15-minute block's energy. Readings not newer
    than the last one only get the `tou` tag (they cannot define an interval without double counting).
    The register rollover is per device: `site["register_rollover_kwh"]`, else from the register size
    `site["register_digits"]` (and `register_decimals`: 6 digits with 1 decimal wrap at 100000), else the
    configured default. An interval implying more than `contracted_kw_multiple` × `site["contracted_kw"]`
    (or `max_interval_kw` where no contract is known) is rejected `implausible_interval`: it is not billed,
    and counting restarts from the new register value so one bad reading cannot block the ones after it.
    """

    feed = "energy"

    def __init__(
        self,
        emission_factors: Mapping[int, float] | None = None,
        register_rollover_kwh: float | None = 1_000_000.0,
        *,
        wrap_fraction: float = DEFAULT_WRAP_FRACTION,
        contracted_kw_multiple: float | None = 10.0,
        max_interval_kw: float | None = 10_000.0,
        calendar: TouCalendar | None = None,
    ) -> None:
        self.emission_factors = dict(emission_factors or DEFAULT_EMISSION_FACTORS)
        self.register_rollover_kwh = register_rollover_kwh
        self.wrap_fraction = wrap_fraction
        self.contracted_kw_multiple = contracted_kw_multiple
        self.max_interval_kw = max_interval_kw
        self.calendar = calendar or DEFAULT_TOU_CALENDAR
        self._meters: dict[str, _MeterState] = {}

    def _rollover(self, device: DeviceInfo) -> float | None:
        site_value = _number(device.site.get("register_rollover_kwh"))
        if site_value is not None:
            return site_value
        digits = _number(device.site.get("register_digits"))
        if digits is not None and digits > 0:
            decimals = _number(device.site.get("register_decimals")) or 0.0
            return float(10 ** (digits - decimals))
        return self.register_rollover_kwh

    def _limit_kw(self, device: DeviceInfo) -> tuple[float, str] | None:
        contracted = _number(device.site.get("contracted_kw"))
        if contracted is not None and contracted > 0 and self.contracted_kw_multiple is not None:
            limit = contracted * self.contracted_kw_multiple
            return limit, f"{self.contracted_kw_multiple:g} × the contracted {contracted:g} kW"
        if self.max_interval_kw is not None:
            return self.max_interval_kw, f"the configured maximum {self.max_interval_kw:g} kW (no contracted_kw)"
        return None

    def enrich(self, reading: Reading, device: DeviceInfo) -> None:
        register = _number(reading.fields.get("energy_kwh"))
        state = self._meters.get(reading.device_id) if register is not None and register >= 0 else None
        if register is None or register < 0 or state is None or reading.time_ns <= state.time_ns:
            reading.tags["tou"] = self.calendar.period(reading.time_ns)
            if register is not None and register >= 0 and state is None:
                self._meters[reading.device_id] = _MeterState(reading.time_ns, register)
            return
        t0, t1 = state.time_ns, reading.time_ns
        # the interval (t0, t1] ends just before t1: energy used 08:59:59–09:00:00 is off-peak
        reading.tags["tou"] = self.calendar.period(t1 - 1)
        previous = state.register_kwh
        interval = register_interval(previous, register, self._rollover(device), self.wrap_fraction)
        limit = self._limit_kw(device)
        # below IMPLAUSIBLE_MIN_KWH a high implied power is register resolution over a short gap, not a jump
        if interval is not None and limit is not None and interval > IMPLAUSIBLE_MIN_KWH:
            implied_kw = interval / ((t1 - t0) / _NS / 3600)
            if implied_kw > limit[0]:
                state.restart(t1, register)
                raise RejectedMessage(
                    "implausible_interval",
                    f"energy_kwh {previous:g} -> {register:g} in {(t1 - t0) / _NS:g} s implies {implied_kw:.0f} kW, "
                    f"more than {limit[1]}; not billed, counting restarts from {register:g}",
                )
        if interval is None:
            state.restart(t1, register)  # reset or replacement: the energy in between is unknown
            return
        state.time_ns, state.register_kwh = t1, register
        reading.fields["interval_kwh"] = round(interval, 6)
        on_ns = self.calendar.on_peak_ns(t0, t1)
        on_kwh = interval * on_ns / (t1 - t0)
        reading.fields["interval_on_peak_kwh"] = round(on_kwh, 6)
        reading.fields["interval_off_peak_kwh"] = round(interval - on_kwh, 6)
        reading.fields["co2e_kg"] = round(co2e_kg(interval, bangkok_time(t1).year, self.emission_factors), 6)
        demand = completed_block_demand(state, t0, t1, interval)
        if demand is not None:
            reading.fields["demand_15min_kw"] = round(demand, 6)

    def export_state(self) -> dict[str, Any]:
        return {
            device_id: {
                "time_ns": s.time_ns,
                "register_kwh": s.register_kwh,
                "block_start_ns": s.block_start_ns,
                "block_kwh": s.block_kwh,
                "counted_since_ns": s.counted_since_ns,
            }
            for device_id, s in self._meters.items()
        }

    def import_state(self, state: dict[str, Any]) -> None:
        for device_id, entry in state.items():
            try:
                if not restorable(int(entry["time_ns"])):
                    continue
                block_start = entry.get("block_start_ns")
                counted = entry.get("counted_since_ns")
                self._meters[str(device_id)] = _MeterState(
                    int(entry["time_ns"]),
                    float(entry["register_kwh"]),
                    int(block_start) if block_start is not None else None,
                    float(entry.get("block_kwh", 0.0)),
                    # state saved before this field existed: counted since the block start (as it was then)
                    int(counted) if counted is not None else (int(block_start) if block_start is not None else None),
                )
            except (AttributeError, KeyError, TypeError, ValueError):
                continue
