"""Thai domain calculations (pure, no I/O besides reading the optional speed-zone GeoJSON once).

`default_enrichers()` returns one enricher per feed; each adds derived fields to validated readings.
Defaults come from /work/shared/reference/thailand.md; see collectors/domain/README.md for formulas,
sources and what is UNVERIFIED (and therefore configurable here).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from collectors.domain.aqi import AirQualityEnricher
from collectors.domain.base import Enricher
from collectors.domain.bus import (
    DEFAULT_ROAD_CLASS,
    DEFAULT_SPEED_LIMITS_KMH,
    STOP_SPEED_KMH,
    BusEnricher,
    SpeedZones,
)
from collectors.domain.energy import (
    DEFAULT_EMISSION_FACTORS,
    DEFAULT_WRAP_FRACTION,
    EnergyEnricher,
    TouCalendar,
)
from collectors.domain.flood import DEFAULT_BANK_LEGEND, DEFAULT_RISE_MAX_GAP_S, BankLegendBand, FloodEnricher
from collectors.feeds import FEED_SPECS
from collectors.timecheck import DEFAULT_FLOOR, TimePolicy

__all__ = ["DomainConfig", "Enricher", "default_enrichers"]


class DomainConfig(BaseModel):
    """Tunable domain numbers (`[domain]` in nakhon.toml), validated at start: an unknown key, a missing speed-zone
    file, a road class without a limit or a sentinel for an unknown field is an error naming the key.
    Defaults: thailand.md (TGO factor, MEA/PEA, press-reported speed limits, ThaiWater legend); items marked
    UNVERIFIED there are exactly the ones worth overriding."""

    model_config = ConfigDict(extra="forbid")

    profiles_dir: Path | None = Field(
        default=None, description="Directory of device-profile YAML files, loaded besides the shipped ones"
    )
    emission_factors_kgco2e_per_kwh: dict[int, float] = Field(
        default_factory=lambda: dict(DEFAULT_EMISSION_FACTORS),
        description="Grid emission factor by first year of validity (TGO; 0.4750 from 2026)",
    )
    register_rollover_kwh: float | None = Field(
        default=1_000_000.0,
        gt=0,
        description="Value at which energy registers wrap to zero (1e6 for a 999999 display, 1e5 for 99999.9); "
        "per device: site['register_rollover_kwh'] or site['register_digits'] / ['register_decimals']",
    )
    register_wrap_fraction: float = Field(
        default=DEFAULT_WRAP_FRACTION, gt=0, lt=0.5,
        description="A register drop is a rollover only within this fraction of both ends (else a replacement)",
    )
    contracted_kw_multiple: float | None = Field(
        default=10.0, gt=0,
        description="An interval implying more than this × site contracted_kw is quarantined (ours, UNVERIFIED)",
    )
    max_interval_kw: float | None = Field(
        default=10_000.0, gt=0,
        description="The same limit for meters without contracted_kw, kW (ours, UNVERIFIED)",
    )
    tou_off_peak_days: list[date] = Field(
        default_factory=list, description="Extra whole off-peak days of a year (MEA/PEA announcements)"
    )
    tou_on_peak_days: list[date] = Field(
        default_factory=list, description="Holidays the utility bills as ordinary weekdays that year"
    )
    speed_limits_kmh: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_SPEED_LIMITS_KMH),
        description="School-bus limits by road class (press reports, UNVERIFIED)",
    )
    default_road_class: str = Field(
        default=DEFAULT_ROAD_CLASS, description="Road class of buses whose site names none (a speed_limits_kmh key)"
    )
    default_speed_limit_kmh: float | None = Field(
        default=None, gt=0, description="Limit when no zone and no site value; unset: that of default_road_class"
    )
    stop_speed_kmh: float = Field(default=STOP_SPEED_KMH, description="Below this a bus counts as stopped")
    speed_zones_path: Path | None = Field(default=None, description="GeoJSON FeatureCollection of speed zones")
    flood_legend: list[BankLegendBand] = Field(
        default_factory=lambda: list(DEFAULT_BANK_LEGEND),
        description="ThaiWater percent-of-bank legend (UNVERIFIED)",
    )
    rise_max_gap_s: float = Field(
        default=DEFAULT_RISE_MAX_GAP_S, description="Longest gap between levels used for the rise rate"
    )
    time_max_future_s: float | None = Field(
        default=600.0, ge=0, description="Readings further ahead of the receive time are bad_time"
    )
    time_floor: datetime = Field(default=DEFAULT_FLOOR, description="Readings before this are bad_time")
    sentinels: dict[str, dict[str, list[float]]] = Field(
        default_factory=dict,
        description="Per feed and canonical field, numbers meaning 'no value' (replace the feed's defaults)",
    )

    @field_validator("emission_factors_kgco2e_per_kwh")
    @classmethod
    def _factors(cls, factors: dict[int, float]) -> dict[int, float]:
        if not factors:
            raise ValueError("at least one year's factor is needed")
        for year, factor in factors.items():
            if not 1990 <= year <= 2200 or not 0 <= factor <= 5:
                raise ValueError(f"{year}: expected a year 1990..2200 and a factor 0..5 kgCO2e/kWh, got {factor}")
        return factors

    @field_validator("speed_zones_path")
    @classmethod
    def _zones_load(cls, path: Path | None) -> Path | None:
        if path is not None:
            try:
                SpeedZones.from_file(path)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}: not a usable speed-zone GeoJSON: {type(exc).__name__}: {exc}") from None
        return path

    @field_validator("profiles_dir")
    @classmethod
    def _profiles_load(cls, path: Path | None) -> Path | None:
        if path is not None:
            from collectors.mapping.profiles import check_profiles

            _, errors = check_profiles(path)
            if errors:
                raise ValueError("; ".join(errors))
        return path

    @field_validator("sentinels")
    @classmethod
    def _sentinel_fields(cls, sentinels: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
        for feed, fields in sentinels.items():
            if feed not in FEED_SPECS:
                raise ValueError(f"{feed}: unknown feed; known: {', '.join(FEED_SPECS)}")
            unknown = [f for f in fields if f not in FEED_SPECS[feed].field_names]
            if unknown:
                raise ValueError(f"{feed}: not fields of the feed: {', '.join(unknown)}")
        return sentinels

    @model_validator(mode="after")
    def _road_class_known(self) -> DomainConfig:
        if self.default_road_class not in self.speed_limits_kmh:
            raise ValueError(
                f"default_road_class {self.default_road_class!r} has no entry in speed_limits_kmh "
                f"({', '.join(self.speed_limits_kmh)})"
            )
        return self

    def time_policy(self) -> TimePolicy:
        return TimePolicy(max_future_s=self.time_max_future_s, floor=self.time_floor)

    def tou_calendar(self) -> TouCalendar:
        return TouCalendar(frozenset(self.tou_off_peak_days), frozenset(self.tou_on_peak_days))

    def feed_sentinels(self) -> dict[str, dict[str, frozenset[float]]]:
        """The feeds' default sentinels with the configured ones replacing them field by field."""
        out = {feed: spec.sentinel_sets() for feed, spec in FEED_SPECS.items()}
        for feed, fields in self.sentinels.items():
            for name, values in fields.items():
                out[feed][name] = frozenset(float(v) for v in values)
        return out


def default_enrichers(config: DomainConfig | None = None) -> dict[str, Enricher]:
    """One enricher per feed, keyed by feed name ("air", "flood", "energy", "bus")."""
    cfg = config or DomainConfig()
    zones = SpeedZones.from_file(cfg.speed_zones_path) if cfg.speed_zones_path else SpeedZones()
    enrichers: list[Enricher] = [
        AirQualityEnricher(),
        FloodEnricher(rise_max_gap_s=cfg.rise_max_gap_s, legend=cfg.flood_legend),
        EnergyEnricher(
            emission_factors=cfg.emission_factors_kgco2e_per_kwh,
            register_rollover_kwh=cfg.register_rollover_kwh,
            wrap_fraction=cfg.register_wrap_fraction,
            contracted_kw_multiple=cfg.contracted_kw_multiple,
            max_interval_kw=cfg.max_interval_kw,
            calendar=cfg.tou_calendar(),
        ),
        BusEnricher(
            zones=zones,
            limits_kmh=cfg.speed_limits_kmh,
            default_limit_kmh=(
                cfg.default_speed_limit_kmh
                if cfg.default_speed_limit_kmh is not None
                else cfg.speed_limits_kmh[cfg.default_road_class]
            ),
            stop_speed_kmh=cfg.stop_speed_kmh,
        ),
    ]
    return {e.feed: e for e in enrichers}
