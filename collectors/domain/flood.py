"""Flood / water-level derived values: percent of bank, bank status, ultrasonic level, rate of rise.

Sources (/work/shared/reference/thailand.md, "Flood and water level"):

* ThaiWater / HII (api-v3.thaiwater.net) `storage_percent = (waterlevel_msl − ground_level) /
  (min_bank − ground_level) × 100`; we compute the same as `level_pct_bank` from the device's `site`
  (`bank_level_m`, `ground_level_m`, both in the same datum as the gauge's `level_m`).
* ThaiWater's public legend (≤10 % critically low · 10–30 low · 30–70 normal · 70–100 high · >100 overbank) is
  UNVERIFIED against an official document, so it is a configurable table (`BankLegendBand`).
* Ultrasonic gauges report the distance down to the water: level = mounting height − distance.
* No official national rate-of-rise threshold was found; the rate is derived from consecutive levels of the
  same device and scaled to cm per 10 minutes, and the longest usable gap is configurable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from collectors.domain.base import restorable
from core.model import DeviceInfo, Reading


class BankLegendBand(BaseModel):
    """One legend entry: applies up to and including `upper_pct` (None: everything above the previous band)."""

    upper_pct: float | None
    status: str
    name_th: str
    name_en: str


# ThaiWater public legend, UNVERIFIED (thailand.md): configurable through DomainConfig.flood_legend.
DEFAULT_BANK_LEGEND: tuple[BankLegendBand, ...] = (
    BankLegendBand(upper_pct=10, status="critically_low", name_th="น้ำน้อยวิกฤต", name_en="Critically low"),
    BankLegendBand(upper_pct=30, status="low", name_th="น้ำน้อย", name_en="Low"),
    BankLegendBand(upper_pct=70, status="normal", name_th="ปกติ", name_en="Normal"),
    BankLegendBand(upper_pct=100, status="high", name_th="น้ำมาก", name_en="High"),
    BankLegendBand(upper_pct=None, status="overbank", name_th="ล้นตลิ่ง", name_en="Overbank"),
)

DEFAULT_RISE_MAX_GAP_S = 3600.0


def level_pct_bank(level_m: float, bank_level_m: float, ground_level_m: float) -> float | None:
    """Water level as percent of the bank height above ground (ThaiWater `storage_percent`).

    None when the bank is not above the ground level (a mis-surveyed site would divide by zero or flip sign).
    """
    height = bank_level_m - ground_level_m
    if not height > 0:
        return None
    return (level_m - ground_level_m) / height * 100.0


def bank_status(pct: float, legend: Sequence[BankLegendBand] = DEFAULT_BANK_LEGEND) -> BankLegendBand:
    """The legend band holding `pct` (bands are checked in order, upper bound inclusive)."""
    for band in legend:
        if band.upper_pct is None or pct <= band.upper_pct:
            return band
    return legend[-1]


def level_from_distance(mounting_height_m: float, distance_m: float) -> float:
    """Water level from an ultrasonic / radar gauge: sensor height above the datum minus distance to water."""
    return mounting_height_m - distance_m


def rise_cm_per_10min(
    prev_time_ns: int, prev_level_m: float, time_ns: int, level_m: float, max_gap_s: float = DEFAULT_RISE_MAX_GAP_S
) -> float | None:
    """Rate of change between two levels in cm per 10 minutes (negative when falling).

    None when time does not increase or the gap is longer than `max_gap_s` (a rate over a long gap would hide
    the shape of a flood wave, and a stale previous level may come from before a gauge outage).
    """
    dt_s = (time_ns - prev_time_ns) / 1e9
    if dt_s <= 0 or dt_s > max_gap_s:
        return None
    return (level_m - prev_level_m) * 100.0 / dt_s * 600.0


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _site_number(site: Mapping[str, Any], key: str) -> float | None:
    value = site.get(key)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return _number(value)


class FloodEnricher:
    """Feed "flood": sets `level_pct_bank` (from the site survey) and `rise_cm_per_10min` (from the last level)."""

    feed = "flood"

    def __init__(
        self, rise_max_gap_s: float = DEFAULT_RISE_MAX_GAP_S, legend: Sequence[BankLegendBand] = DEFAULT_BANK_LEGEND
    ) -> None:
        self.rise_max_gap_s = rise_max_gap_s
        self.legend = tuple(legend)
        self._last: dict[str, tuple[int, float]] = {}  # device_id -> (time_ns, level_m)

    def status(self, pct: float) -> BankLegendBand:
        """The configured legend band for a percent-of-bank value (for rules and dashboards)."""
        return bank_status(pct, self.legend)

    def enrich(self, reading: Reading, device: DeviceInfo) -> None:
        level = _number(reading.fields.get("level_m"))
        if level is None:
            return
        bank = _site_number(device.site, "bank_level_m")
        ground = _site_number(device.site, "ground_level_m")
        if bank is not None and ground is not None:
            pct = level_pct_bank(level, bank, ground)
            if pct is not None:
                reading.fields["level_pct_bank"] = round(pct, 2)
        last = self._last.get(reading.device_id)
        if last is not None:
            rise = rise_cm_per_10min(last[0], last[1], reading.time_ns, level, self.rise_max_gap_s)
            if rise is not None:
                reading.fields["rise_cm_per_10min"] = round(rise, 3)
        # A late reading must not become the baseline: the next rate is taken from the newest level.
        if last is None or reading.time_ns > last[0]:
            self._last[reading.device_id] = (reading.time_ns, level)

    def export_state(self) -> dict[str, Any]:
        return {device_id: {"time_ns": t, "level_m": lvl} for device_id, (t, lvl) in self._last.items()}

    def import_state(self, state: dict[str, Any]) -> None:
        for device_id, entry in state.items():
            try:
                if restorable(int(entry["time_ns"])):
                    self._last[str(device_id)] = (int(entry["time_ns"]), float(entry["level_m"]))
            except (KeyError, TypeError, ValueError):
                continue
