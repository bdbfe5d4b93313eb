"""Energy-meter derived values: interval energy, time-of-use period, CO2e, 15-minute demand, power factor.

Sources (/work/shared/reference/thailand.md, "Energy"):

* TOU (MEA and PEA, same schedule): on-peak Mon–Fri 09:00–22:00 Asia/Bangkok; off-peak Mon–Fri 22:00–09:00
  and all day on Saturdays, Sundays, Labour Day (1 May) and public holidays (`holidays.Thailand`).
* Billing demand is the maximum 15-minute integrated demand.
* Power-factor charge applies when reactive demand exceeds 61.97 % of kW demand (≈ PF below 0.85).
* Grid emission factor, Thailand Greenhouse Gas Management Organization (TGO): 0.4750 kgCO2e/kWh (Scope 2)
  from 1 January 2026, https://www.nationthailand.com/news/policy/40059019 — configurable per year.

15-minute demand method: blocks are fixed clock quarter-hours (:00, :15, :30, :45; Bangkok is a whole-hour
offset from UTC, so UTC and local blocks coincide). Each interval's energy is attributed to the blocks it spans
in proportion to time (constant power assumed inside an interval). `demand_15min_kw` is the energy counted so
far in the block of the reading / 0.25 h: it rises through the block and, at the block's last reading, equals
that block's integrated demand; the billing demand is the maximum of those block-end values over the month.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal

import holidays

from collectors.model import DeviceInfo, Reading

# Thailand keeps UTC+7 all year (no DST), so a fixed offset is exact and needs no tz database.
BANGKOK = timezone(timedelta(hours=7), "Asia/Bangkok")

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
    return datetime.fromtimestamp(time_ns / _NS, tz=UTC).astimezone(BANGKOK)


@lru_cache(maxsize=32)
def _thai_holidays(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("TH", years=year)


def is_off_peak_day(day: date) -> bool:
    """Saturday, Sunday, Labour Day (1 May) or a Thai public holiday."""
    return day.weekday() >= 5 or (day.month, day.day) == (5, 1) or day in _thai_holidays(day.year)


def tou_period(time_ns: int) -> TouPeriod:
    """MEA/PEA time-of-use period of a UTC-nanosecond instant: on-peak Mon–Fri 09:00–22:00 Bangkok time."""
    local = bangkok_time(time_ns)
    if is_off_peak_day(local.date()):
        return "off_peak"
    return "on_peak" if ON_PEAK_START_HOUR <= local.hour < ON_PEAK_END_HOUR else "off_peak"


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


def register_interval(
    previous_kwh: float, current_kwh: float, rollover_kwh: float | None, wrap_fraction: float = 0.1
) -> float | None:
    """Energy between two readings of a cumulative register, or None when it cannot be known.

    * Rising register: the difference.
    * Rollover: the register wraps to zero at `rollover_kwh` (100000 for a 99999.9 display, 1000000 for a
      999999 one). A drop counts as a wrap only when the previous value was in the top `wrap_fraction` of the
      range and the new one in the bottom `wrap_fraction`; then the energy is (rollover − previous) + current.
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
    __slots__ = ("block_kwh", "block_start_ns", "register_kwh", "time_ns")

    def __init__(self, time_ns: int, register_kwh: float, block_start_ns: int | None = None, block_kwh: float = 0.0):
        self.time_ns = time_ns
        self.register_kwh = register_kwh
        self.block_start_ns = block_start_ns
        self.block_kwh = block_kwh


def demand_block_start(time_ns: int) -> int:
    """Start (UTC ns) of the fixed 15-minute block holding `time_ns`; a reading at a block's end instant
    (e.g. 10:15:00) closes the previous block, so the block is (start, start + 15 min]."""
    block_ns = DEMAND_BLOCK_S * _NS
    return ((time_ns - 1) // block_ns) * block_ns


class EnergyEnricher:
    """Feed "energy": `interval_kwh`, `co2e_kg`, `demand_15min_kw` (when computable) and tag `tou` (always).

    Per-device state is the last register value and the current 15-minute block's energy. Readings not newer
    than the last one only get the `tou` tag (they cannot define an interval without double counting).
    The register rollover can be set per device with `site["register_rollover_kwh"]`.
    """

    feed = "energy"

    def __init__(
        self,
        emission_factors: Mapping[int, float] | None = None,
        register_rollover_kwh: float | None = 1_000_000.0,
    ) -> None:
        self.emission_factors = dict(emission_factors or DEFAULT_EMISSION_FACTORS)
        self.register_rollover_kwh = register_rollover_kwh
        self._meters: dict[str, _MeterState] = {}

    def _rollover(self, device: DeviceInfo) -> float | None:
        site_value = _number(device.site.get("register_rollover_kwh"))
        return site_value if site_value is not None else self.register_rollover_kwh

    def enrich(self, reading: Reading, device: DeviceInfo) -> None:
        reading.tags["tou"] = tou_period(reading.time_ns)
        register = _number(reading.fields.get("energy_kwh"))
        if register is None or register < 0:
            return
        state = self._meters.get(reading.device_id)
        if state is None:
            self._meters[reading.device_id] = _MeterState(reading.time_ns, register)
            return
        if reading.time_ns <= state.time_ns:
            return
        interval = register_interval(state.register_kwh, register, self._rollover(device))
        t0, t1 = state.time_ns, reading.time_ns
        state.time_ns, state.register_kwh = t1, register
        if interval is None:
            return
        reading.fields["interval_kwh"] = round(interval, 6)
        reading.fields["co2e_kg"] = round(
            co2e_kg(interval, bangkok_time(t1).year, self.emission_factors), 6
        )
        block = demand_block_start(t1)
        # Only the part of the interval inside the current block counts towards it (constant power assumed).
        share = interval * (t1 - max(t0, block)) / (t1 - t0)
        if state.block_start_ns == block:
            state.block_kwh += share
        else:
            state.block_start_ns, state.block_kwh = block, share
        reading.fields["demand_15min_kw"] = round(state.block_kwh / (DEMAND_BLOCK_S / 3600), 6)

    def export_state(self) -> dict[str, Any]:
        return {
            device_id: {
                "time_ns": s.time_ns,
                "register_kwh": s.register_kwh,
                "block_start_ns": s.block_start_ns,
                "block_kwh": s.block_kwh,
            }
            for device_id, s in self._meters.items()
        }

    def import_state(self, state: dict[str, Any]) -> None:
        for device_id, entry in state.items():
            try:
                block_start = entry.get("block_start_ns")
                self._meters[str(device_id)] = _MeterState(
                    int(entry["time_ns"]),
                    float(entry["register_kwh"]),
                    int(block_start) if block_start is not None else None,
                    float(entry.get("block_kwh", 0.0)),
                )
            except (AttributeError, KeyError, TypeError, ValueError):
                continue
