"""Air Quality Index: Thailand PCD AQI and US EPA AQI (2024), rolling means and the air-feed enricher.

Sources (see /work/shared/reference/thailand.md, "Air quality"):

* Thai AQI — Pollution Control Department (PCD), PM2.5 row revised and in force from 1 June 2023:
  https://thailand.go.th/issue-focus-detail/001_04_073 ,
  https://www.thaipbsworld.com/thailands-new-air-quality-standard-to-take-effect-on-june-1st/ ,
  Air4Thai (air4thai.pcd.go.th).
* US AQI — EPA PM NAAQS / AQI fact sheet (2024-02), used by AirNow from 6 May 2024:
  https://www.epa.gov/system/files/documents/2024-02/pm-naaqs-air-quality-index-fact-sheet.pdf

Calculation (both indices): the sub-index of a pollutant is the linear interpolation
``I = (I_hi − I_lo) / (C_hi − C_lo) × (C − C_lo) + I_lo`` inside the band that holds the concentration; the
overall index is the largest sub-index, reported with the pollutant that sets it. Arithmetic is done in
`Decimal` so that table edges (e.g. 0.1 µg/m³ steps) and half-way results are exact.

Choices made here (also in collectors/domain/README.md):

* Band lookup is ``the first band whose upper breakpoint C_hi >= C``. A concentration that falls between two
  printed bands (Thai PM2.5 25.05 lies between 25.0 and 25.1) therefore belongs to the upper band, and its
  sub-index is clamped up to that band's I_lo (25.05 -> 51), because it is above the lower band's ceiling.
* Thai rounding is half-up (NO2 30 ppb -> 12.5 -> 13, as in an Air4Thai sample; UNVERIFIED as a written rule).
* Thai AQI above 200 has no published upper breakpoint. We continue the 101–200 band's slope from the
  ">200" band's lower breakpoint: ``I = 201 + (C − C_lo(>200)) × 99 / (C_hi − C_lo)(101–200 band)``,
  without a cap (PM2.5 75.1 -> 201, 112.5 -> 300).
* US concentrations are truncated before lookup (PM2.5 and CO to 0.1, O3 to 0.001 ppm, PM10/SO2/NO2 to 1);
  the index is rounded to the nearest integer (half-up). Our canonical O3 is ppb and is converted to ppm.
* US AQI above 500 is capped at 500 (AirNow shows "Beyond the AQI"). The 8-hour O3 table stops at
  0.200 ppm (AQI 300; EPA uses 1-hour O3 above that, which we do not have): above 0.200 ppm we continue the
  201–300 slope, still capped at 500.
* SO2 uses the 1-hour rows for all bands as the reference table gives them (EPA officially uses the 24-hour
  mean for SO2 AQI >= 200).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from collectors.domain.base import restorable
from core.model import DeviceInfo, Reading

POLLUTANTS: tuple[str, ...] = ("pm25", "pm10", "o3", "co", "no2", "so2")

#: Canonical field (see collectors/feeds/air/schema.py) for each pollutant.
POLLUTANT_FIELDS: dict[str, str] = {
    "pm25": "pm25_ugm3",
    "pm10": "pm10_ugm3",
    "o3": "o3_ppb",
    "co": "co_ppm",
    "no2": "no2_ppb",
    "so2": "so2_ppb",
}

#: Averaging period of each pollutant in both indices (PM 24 h, O3/CO 8 h, NO2/SO2 1 h).
AVERAGING_S: dict[str, int] = {
    "pm25": 24 * 3600,
    "pm10": 24 * 3600,
    "o3": 8 * 3600,
    "co": 8 * 3600,
    "no2": 3600,
    "so2": 3600,
}


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """One row of an AQI table: concentrations c_lo..c_hi map linearly onto index i_lo..i_hi."""

    c_lo: Decimal
    c_hi: Decimal
    i_lo: int
    i_hi: int


def _table(rows: list[tuple[str, str, int, int]]) -> tuple[Breakpoint, ...]:
    return tuple(Breakpoint(Decimal(lo), Decimal(hi), ilo, ihi) for lo, hi, ilo, ihi in rows)


# Thai PCD AQI, units as the canonical fields (µg/m³, ppb, ppm). Source: thailand.go.th 001_04_073 (2023).
THAI_TABLE: dict[str, tuple[Breakpoint, ...]] = {
    "pm25": _table([("0", "15.0", 0, 25), ("15.1", "25.0", 26, 50), ("25.1", "37.5", 51, 100),
                    ("37.6", "75.0", 101, 200)]),
    "pm10": _table([("0", "50", 0, 25), ("51", "80", 26, 50), ("81", "120", 51, 100), ("121", "180", 101, 200)]),
    "o3": _table([("0", "35", 0, 25), ("36", "50", 26, 50), ("51", "70", 51, 100), ("71", "120", 101, 200)]),
    "co": _table([("0", "4.4", 0, 25), ("4.5", "6.4", 26, 50), ("6.5", "9.0", 51, 100), ("9.1", "30.0", 101, 200)]),
    "no2": _table([("0", "60", 0, 25), ("61", "106", 26, 50), ("107", "170", 51, 100), ("171", "340", 101, 200)]),
    "so2": _table([("0", "100", 0, 25), ("101", "200", 26, 50), ("201", "300", 51, 100), ("301", "400", 101, 200)]),
}

#: Lower breakpoint of the Thai ">200" band (index 201), per pollutant.
THAI_ABOVE_200_LO: dict[str, Decimal] = {
    "pm25": Decimal("75.1"), "pm10": Decimal("181"), "o3": Decimal("121"),
    "co": Decimal("30.1"), "no2": Decimal("341"), "so2": Decimal("401"),
}

# US EPA AQI 2024. O3 in ppm (8 h), CO ppm, PM µg/m³, SO2/NO2 ppb. Source: EPA fact sheet 2024-02.
US_TABLE: dict[str, tuple[Breakpoint, ...]] = {
    "pm25": _table([("0.0", "9.0", 0, 50), ("9.1", "35.4", 51, 100), ("35.5", "55.4", 101, 150),
                    ("55.5", "125.4", 151, 200), ("125.5", "225.4", 201, 300), ("225.5", "325.4", 301, 500)]),
    "pm10": _table([("0", "54", 0, 50), ("55", "154", 51, 100), ("155", "254", 101, 150), ("255", "354", 151, 200),
                    ("355", "424", 201, 300), ("425", "604", 301, 500)]),
    "o3": _table([("0.000", "0.054", 0, 50), ("0.055", "0.070", 51, 100), ("0.071", "0.085", 101, 150),
                  ("0.086", "0.105", 151, 200), ("0.106", "0.200", 201, 300)]),
    "co": _table([("0.0", "4.4", 0, 50), ("4.5", "9.4", 51, 100), ("9.5", "12.4", 101, 150), ("12.5", "15.4", 151, 200),
                  ("15.5", "30.4", 201, 300), ("30.5", "50.4", 301, 500)]),
    "so2": _table([("0", "35", 0, 50), ("36", "75", 51, 100), ("76", "185", 101, 150), ("186", "304", 151, 200),
                   ("305", "604", 201, 300), ("605", "1004", 301, 500)]),
    "no2": _table([("0", "53", 0, 50), ("54", "100", 51, 100), ("101", "360", 101, 150), ("361", "649", 151, 200),
                   ("650", "1249", 201, 300), ("1250", "2049", 301, 500)]),
}

#: Truncation step for US lookups, in the US table's units.
US_TRUNCATION: dict[str, Decimal] = {
    "pm25": Decimal("0.1"), "co": Decimal("0.1"), "o3": Decimal("0.001"),
    "pm10": Decimal("1"), "so2": Decimal("1"), "no2": Decimal("1"),
}

US_AQI_CAP = 500


@dataclass(frozen=True, slots=True)
class Band:
    """A named AQI category: upper index bound (inclusive), names and display colour."""

    level: int
    upper: int | None  # None: open-ended top band
    name_th: str
    name_en: str
    colour: str
    colour_hex: str


# Thai bands and colours, from thailand.md (PCD). Hex values are the Air4Thai palette shades.
THAI_BANDS: tuple[Band, ...] = (
    Band(1, 25, "ดีมาก", "Very good", "blue", "#3BCCFF"),
    Band(2, 50, "ดี", "Good", "green", "#92D050"),
    Band(3, 100, "ปานกลาง", "Moderate", "yellow", "#FFFF00"),
    Band(4, 200, "เริ่มมีผลกระทบต่อสุขภาพ", "Starting to affect health", "orange", "#FFA200"),
    Band(5, None, "มีผลกระทบต่อสุขภาพ", "Affects health", "red", "#F04646"),
)

# US categories and the EPA standard colours (TAD EPA-454/B-24-002, table 1).
US_CATEGORIES: tuple[Band, ...] = (
    Band(1, 50, "ดี", "Good", "green", "#00E400"),
    Band(2, 100, "ปานกลาง", "Moderate", "yellow", "#FFFF00"),
    Band(3, 150, "ไม่ดีต่อกลุ่มเสี่ยง", "Unhealthy for Sensitive Groups", "orange", "#FF7E00"),
    Band(4, 200, "ไม่ดีต่อสุขภาพ", "Unhealthy", "red", "#FF0000"),
    Band(5, 300, "ไม่ดีต่อสุขภาพมาก", "Very Unhealthy", "purple", "#8F3F97"),
    Band(6, None, "อันตราย", "Hazardous", "maroon", "#7E0023"),
)


def round_half_up(value: Decimal | float) -> int:
    """Round to the nearest integer, halves away from zero (12.5 -> 13), unlike Python's banker's `round`."""
    dec = value if isinstance(value, Decimal) else Decimal(repr(value))
    return int(dec.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _dec(value: float | int | Decimal) -> Decimal:
    # repr() gives the shortest decimal that round-trips, so 25.1 stays 25.1 rather than 25.1000000000000014...
    return value if isinstance(value, Decimal) else Decimal(repr(float(value)))


def _interpolate(c: Decimal, bp: Breakpoint) -> Decimal:
    # Multiply before dividing so that a band's upper breakpoint lands exactly on I_hi.
    return Decimal(bp.i_hi - bp.i_lo) * (c - bp.c_lo) / (bp.c_hi - bp.c_lo) + bp.i_lo


def _lookup(c: Decimal, table: tuple[Breakpoint, ...]) -> Breakpoint | None:
    for bp in table:
        if c <= bp.c_hi:  # between printed bands -> the upper band (see module docstring)
            return bp
    return None


def _usable(concentration: float | None) -> bool:
    return concentration is not None and math.isfinite(concentration) and concentration >= 0


# ---------------------------------------------------------------------------------------------- Thai AQI


def thai_sub_index_exact(pollutant: str, concentration: float) -> Decimal:
    """Unrounded Thai sub-index; concentration in canonical units (µg/m³, ppb, ppm) over its averaging period."""
    table = THAI_TABLE[pollutant]
    c = _dec(concentration)
    bp = _lookup(c, table)
    if bp is not None:
        return max(_interpolate(c, bp), Decimal(bp.i_lo))
    # Above 200: continue the 101–200 band's slope from the ">200" lower breakpoint (index 201).
    top = table[-1]
    excess = max(c - THAI_ABOVE_200_LO[pollutant], Decimal(0))
    return Decimal(201) + Decimal(top.i_hi - top.i_lo) * excess / (top.c_hi - top.c_lo)


def _float_rows(table: tuple[Breakpoint, ...]) -> tuple[tuple[float, float, int, int], ...]:
    return tuple((float(bp.c_lo), float(bp.c_hi), bp.i_lo, bp.i_hi) for bp in table)


# Float copies of the tables for the fast path below; the Decimal tables stay the reference.
_EDGE = 1e-9  # closer than this to a breakpoint: decide with the exact (Decimal) path
_HALF = 1e-6  # closer than this to a .5: round with the exact path


def _rounded(x: float) -> int | None:
    """`x` rounded half-up, or None when it is too close to a .5 for float arithmetic to decide."""
    if abs(x - math.floor(x) - 0.5) < _HALF:
        return None
    return math.floor(x + 0.5)


def _fast_index(c: float, rows: tuple[tuple[float, float, int, int], ...], extend_top: bool = False) -> int | None:
    """The rounded sub-index in float arithmetic, or None when the exact path must decide (on a breakpoint,
    on a .5 after interpolation, or above the table unless `extend_top`: then the top band's slope goes on, as
    the US exact path does). Every reading runs this, so it avoids Decimal."""
    for c_lo, c_hi, i_lo, i_hi in rows:
        if abs(c - c_hi) < _EDGE or abs(c - c_lo) < _EDGE:
            return None
        if c <= c_hi:
            x = (i_hi - i_lo) * (c - c_lo) / (c_hi - c_lo) + i_lo
            if x < i_lo:
                return i_lo
            return _rounded(x)
    if not extend_top:
        return None
    c_lo, c_hi, i_lo, i_hi = rows[-1]
    return _rounded((i_hi - i_lo) * (c - c_lo) / (c_hi - c_lo) + i_lo)


def _fast_thai_above_200(pollutant: str, c: float) -> int | None:
    """`thai_sub_index_exact` above the table, in float (None on the ">200" breakpoint or a .5): a haze episode
    keeps PM2.5 means above 75 µg/m³ for days, each mean a new value the memo below cannot serve."""
    lo = _THAI_ABOVE_200_FLOAT[pollutant]
    if abs(c - lo) < _EDGE:
        return None
    c_lo, c_hi, i_lo, i_hi = _THAI_FLOAT[pollutant][-1]
    return _rounded(201 + (i_hi - i_lo) * max(c - lo, 0.0) / (c_hi - c_lo))


_THAI_FLOAT = {p: _float_rows(t) for p, t in THAI_TABLE.items()}
_THAI_ABOVE_200_FLOAT = {p: float(lo) for p, lo in THAI_ABOVE_200_LO.items()}


# Results of the exact path, by (pollutant, concentration): it decides values on a breakpoint or a reporting step
# (whole numbers, 0.1 steps), and such values recur (a steady station's mean, integer readings). Bounded.
_EXACT_MEMO_MAX = 4096
_thai_exact_memo: dict[tuple[str, float], int] = {}
_us_exact_memo: dict[tuple[str, float], int] = {}


def _remember(memo: dict[tuple[str, float], int], key: tuple[str, float], value: int) -> int:
    if len(memo) >= _EXACT_MEMO_MAX:
        memo.clear()
    memo[key] = value
    return value


def thai_sub_index(pollutant: str, concentration: float) -> int:
    """Thai PCD sub-index for one pollutant, rounded half-up."""
    rows = _THAI_FLOAT[pollutant]
    fast = _fast_index(concentration, rows)
    if fast is None and concentration > rows[-1][1] + _EDGE:
        fast = _fast_thai_above_200(pollutant, concentration)
    if fast is not None:
        return fast
    key = (pollutant, concentration)
    known = _thai_exact_memo.get(key)
    if known is not None:
        return known
    return _remember(_thai_exact_memo, key, round_half_up(thai_sub_index_exact(pollutant, concentration)))


def thai_aqi(concentrations: Mapping[str, float | None]) -> tuple[int, str] | None:
    """Thai AQI (largest sub-index) and the pollutant that sets it; None when no pollutant is usable.

    Ties go to the first pollutant in POLLUTANTS order (PM2.5 first), so the result is deterministic.
    """
    best: tuple[int, str] | None = None
    for pollutant in POLLUTANTS:
        c = concentrations.get(pollutant)
        if c is None or not _usable(c):
            continue
        idx = thai_sub_index(pollutant, c)
        if best is None or idx > best[0]:
            best = (idx, pollutant)
    return best


def thai_band(aqi: int) -> Band:
    """The Thai band (level 1..5, Thai and English name, colour) for an AQI value."""
    for band in THAI_BANDS:
        if band.upper is None or aqi <= band.upper:
            return band
    return THAI_BANDS[-1]


# ------------------------------------------------------------------------------------------------ US AQI


def us_truncate(pollutant: str, concentration: float) -> Decimal:
    """Truncate a concentration, in US table units (O3 in ppm), to the EPA reporting precision."""
    return _dec(concentration).quantize(US_TRUNCATION[pollutant], rounding=ROUND_DOWN)


def us_sub_index_exact(pollutant: str, concentration: float) -> Decimal:
    """Unrounded, uncapped US sub-index after truncation. Concentration in US table units (O3 in ppm)."""
    table = US_TABLE[pollutant]
    c = us_truncate(pollutant, concentration)
    bp = _lookup(c, table) or table[-1]  # above the table: continue the top band's slope
    return max(_interpolate(c, bp), Decimal(bp.i_lo))


_US_FLOAT = {p: _float_rows(t) for p, t in US_TABLE.items()}
_US_STEP = {p: float(step) for p, step in US_TRUNCATION.items()}


def us_sub_index(pollutant: str, concentration: float) -> int:
    """US EPA (2024) sub-index, rounded half-up and capped at 500. O3 here is in ppm, as in the EPA table."""
    step = _US_STEP[pollutant]
    steps = concentration / step
    # truncation in float is exact unless the value sits (within float error) on a reporting step
    if steps - math.floor(steps) > _HALF and math.ceil(steps) - steps > _HALF:
        fast = _fast_index(math.floor(steps) * step, _US_FLOAT[pollutant], extend_top=True)
        if fast is not None:
            return min(fast, US_AQI_CAP)
    key = (pollutant, concentration)
    known = _us_exact_memo.get(key)
    if known is not None:
        return known
    return _remember(_us_exact_memo, key,
                     min(round_half_up(us_sub_index_exact(pollutant, concentration)), US_AQI_CAP))


def us_concentration_from_canonical(pollutant: str, value: float) -> float:
    """Convert a canonical field value to US table units: only O3 differs (ppb -> ppm)."""
    return value / 1000.0 if pollutant == "o3" else value


def us_aqi(concentrations: Mapping[str, float | None]) -> tuple[int, str] | None:
    """US AQI and its pollutant from concentrations in canonical units (O3 in ppb, converted here)."""
    best: tuple[int, str] | None = None
    for pollutant in POLLUTANTS:
        c = concentrations.get(pollutant)
        if c is None or not _usable(c):
            continue
        idx = us_sub_index(pollutant, us_concentration_from_canonical(pollutant, c))
        if best is None or idx > best[0]:
            best = (idx, pollutant)
    return best


def us_category(aqi: int) -> Band:
    """The US AQI category (level 1..6) for an AQI value."""
    for band in US_CATEGORIES:
        if band.upper is None or aqi <= band.upper:
            return band
    return US_CATEGORIES[-1]


# ------------------------------------------------------------------------------------------ rolling means


class RollingMean:
    """Time-windowed mean with bounded memory: samples are summed into fixed buckets of `bucket_s` seconds.

    The window covers the `window_s / bucket_s` buckets ending with the bucket that holds the evaluation time,
    so its edge is exact to one bucket. Late samples inside the window are added to their own bucket; samples
    older than the window (relative to the newest sample seen) are dropped.
    """

    def __init__(self, window_s: int, bucket_s: int | None = None) -> None:
        if bucket_s is None:
            bucket_s = max(60, window_s // 288)  # 24 h -> 5 min buckets (288), 8 h -> 100 s, 1 h -> 60 s
        if window_s <= 0 or bucket_s <= 0 or window_s % bucket_s:
            raise ValueError("window_s must be a positive multiple of bucket_s")
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._n = window_s // bucket_s
        self._buckets: dict[int, list[float]] = {}  # bucket index -> [sum, count]
        self._newest: int | None = None
        # Running totals over every kept bucket: the window ending at the newest bucket, the common case,
        # is then answered without walking up to 288 buckets per reading.
        self._sum = 0.0
        self._count = 0.0

    def _bucket(self, time_ns: int) -> int:
        return time_ns // (self.bucket_s * 1_000_000_000)

    def add(self, time_ns: int, value: float) -> bool:
        """Add one sample; False when it is too old for the window (or not a finite number)."""
        if not math.isfinite(value):
            return False
        k = self._bucket(time_ns)
        if self._newest is not None and k <= self._newest - self._n:
            return False
        entry = self._buckets.get(k)
        if entry is None:
            entry = self._buckets[k] = [0.0, 0.0]
        entry[0] += value
        entry[1] += 1
        self._sum += value
        self._count += 1
        if self._newest is None or k > self._newest:
            self._newest = k
            oldest_kept = k - self._n + 1
            evicted = [b for b in self._buckets if b < oldest_kept]
            if evicted:
                for old in evicted:
                    del self._buckets[old]
                # recomputed, not subtracted, so float error cannot build up over months of running
                self._sum = math.fsum(s for s, _ in self._buckets.values())
                self._count = sum(n for _, n in self._buckets.values())
        return True

    def mean(self, at_ns: int | None = None) -> float | None:
        """Mean of the samples in the window ending at `at_ns` (default: the newest sample); None if empty."""
        if at_ns is None:
            if self._newest is None:
                return None
            end = self._newest
        else:
            end = self._bucket(at_ns)
        if end == self._newest:
            return self._sum / self._count if self._count > 0 else None
        total = count = 0.0
        for k, (s, n) in self._buckets.items():
            if end - self._n < k <= end:
                total += s
                count += n
        return total / count if count else None

    def __len__(self) -> int:
        return len(self._buckets)

    def newest_ns(self) -> int | None:
        """Start of the newest sample's bucket, UTC ns (None when empty)."""
        return None if self._newest is None else self._newest * self.bucket_s * 1_000_000_000

    def export_state(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "bucket_s": self.bucket_s,
            "newest": self._newest,
            "buckets": [[k, s, n] for k, (s, n) in sorted(self._buckets.items())],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RollingMean:
        rm = cls(int(state["window_s"]), int(state["bucket_s"]))
        newest = state.get("newest")
        rm._newest = int(newest) if newest is not None else None
        for k, s, n in state.get("buckets", []):
            rm._buckets[int(k)] = [float(s), float(n)]
            rm._sum += float(s)
            rm._count += float(n)
        return rm


# --------------------------------------------------------------------------------------------- enricher


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


_POLLUTANT_FIELD_ITEMS = tuple(POLLUTANT_FIELDS.items())


class AirQualityEnricher:
    """Feed "air": keeps per-device rolling means and sets Thai and US AQI fields on each reading.

    Sets (only what can be computed): `aqi_th`, `aqi_th_band` (1..5), `aqi_th_pollutant`, `aqi_us`,
    `aqi_us_pollutant`, `pm25_24h_ugm3`. Indices use the pollutants' averaging-period means, evaluated at the
    reading's own time, so a late reading gets the index as of when it was measured.
    """

    feed = "air"

    def __init__(self) -> None:
        self._means: dict[str, dict[str, RollingMean]] = {}

    def _device_means(self, device_id: str) -> dict[str, RollingMean]:
        means = self._means.get(device_id)
        if means is None:
            means = {p: RollingMean(AVERAGING_S[p]) for p in POLLUTANTS}
            self._means[device_id] = means
        return means

    def averages(self, reading: Reading) -> dict[str, float]:
        """Update the device's rolling means from `reading` and return the means as of its time."""
        means = self._device_means(reading.device_id)
        fields, time_ns = reading.fields, reading.time_ns
        for pollutant, field in _POLLUTANT_FIELD_ITEMS:
            raw = fields.get(field)
            if raw is None:
                continue
            # validated fields are floats: skip the conversion (add() refuses what is not finite, as _number does)
            value = raw if type(raw) is float else _number(raw)
            if value is not None and value >= 0:
                means[pollutant].add(time_ns, value)
        out: dict[str, float] = {}
        for pollutant, rm in means.items():
            if not rm._buckets:  # nothing to average (most stations measure few of the pollutants)
                continue
            m = rm.mean(time_ns)
            if m is not None:
                out[pollutant] = m
        return out

    def enrich(self, reading: Reading, device: DeviceInfo) -> None:
        avg = self.averages(reading)
        if "pm25" in avg:
            reading.fields["pm25_24h_ugm3"] = round(avg["pm25"], 3)
        th = thai_aqi(avg)
        if th is not None:
            reading.fields["aqi_th"] = th[0]
            reading.fields["aqi_th_band"] = thai_band(th[0]).level
            reading.fields["aqi_th_pollutant"] = th[1]
        us = us_aqi(avg)
        if us is not None:
            reading.fields["aqi_us"] = us[0]
            reading.fields["aqi_us_pollutant"] = us[1]

    def export_state(self) -> dict[str, Any]:
        return {
            device_id: {p: rm.export_state() for p, rm in means.items()} for device_id, means in self._means.items()
        }

    def import_state(self, state: dict[str, Any]) -> None:
        for device_id, per_pollutant in state.items():
            if not isinstance(per_pollutant, dict):
                continue
            means = self._device_means(str(device_id))
            for pollutant, rm_state in per_pollutant.items():
                if pollutant not in AVERAGING_S or not isinstance(rm_state, dict):
                    continue
                try:
                    rm = RollingMean.from_state(rm_state)
                except (KeyError, TypeError, ValueError):
                    continue
                newest = rm.newest_ns()
                if newest is not None and not restorable(newest):
                    continue
                if rm.window_s == AVERAGING_S[pollutant]:  # a state from another window definition is stale
                    means[pollutant] = rm
