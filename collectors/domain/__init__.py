"""Thai domain calculations (pure, no I/O besides reading the optional speed-zone GeoJSON once).

`default_enrichers()` returns one enricher per feed; each adds derived fields to validated readings.
Defaults come from /work/shared/reference/thailand.md; see collectors/domain/README.md for formulas,
sources and what is UNVERIFIED (and therefore configurable here).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from collectors.domain.aqi import AirQualityEnricher
from collectors.domain.base import Enricher
from collectors.domain.bus import DEFAULT_SPEED_LIMITS_KMH, STOP_SPEED_KMH, BusEnricher, SpeedZones
from collectors.domain.energy import DEFAULT_EMISSION_FACTORS, EnergyEnricher
from collectors.domain.flood import DEFAULT_BANK_LEGEND, DEFAULT_RISE_MAX_GAP_S, BankLegendBand, FloodEnricher

__all__ = ["DomainConfig", "Enricher", "default_enrichers"]


class DomainConfig(BaseModel):
    """Tunable domain numbers. Defaults: thailand.md (TGO factor, MEA/PEA, press-reported speed limits,
    ThaiWater legend); items marked UNVERIFIED there are exactly the ones worth overriding."""

    emission_factors_kgco2e_per_kwh: dict[int, float] = Field(
        default_factory=lambda: dict(DEFAULT_EMISSION_FACTORS),
        description="Grid emission factor by first year of validity (TGO; 0.4750 from 2026)",
    )
    register_rollover_kwh: float | None = Field(
        default=1_000_000.0,
        description="Value at which energy registers wrap to zero (1e6 for a 999999 display, 1e5 for 99999.9); "
        "per device: site['register_rollover_kwh']",
    )
    speed_limits_kmh: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_SPEED_LIMITS_KMH),
        description="School-bus limits by road class (press reports, UNVERIFIED)",
    )
    default_speed_limit_kmh: float = Field(default=60.0, description="Limit when no zone and no site value")
    stop_speed_kmh: float = Field(default=STOP_SPEED_KMH, description="Below this a bus counts as stopped")
    speed_zones_path: Path | None = Field(default=None, description="GeoJSON FeatureCollection of speed zones")
    flood_legend: list[BankLegendBand] = Field(
        default_factory=lambda: list(DEFAULT_BANK_LEGEND),
        description="ThaiWater percent-of-bank legend (UNVERIFIED)",
    )
    rise_max_gap_s: float = Field(
        default=DEFAULT_RISE_MAX_GAP_S, description="Longest gap between levels used for the rise rate"
    )


def default_enrichers(config: DomainConfig | None = None) -> dict[str, Enricher]:
    """One enricher per feed, keyed by feed name ("air", "flood", "energy", "bus")."""
    cfg = config or DomainConfig()
    zones = SpeedZones.from_file(cfg.speed_zones_path) if cfg.speed_zones_path else SpeedZones()
    enrichers: list[Enricher] = [
        AirQualityEnricher(),
        FloodEnricher(rise_max_gap_s=cfg.rise_max_gap_s, legend=cfg.flood_legend),
        EnergyEnricher(
            emission_factors=cfg.emission_factors_kgco2e_per_kwh, register_rollover_kwh=cfg.register_rollover_kwh
        ),
        BusEnricher(
            zones=zones,
            limits_kmh=cfg.speed_limits_kmh,
            default_limit_kmh=cfg.default_speed_limit_kmh,
            stop_speed_kmh=cfg.stop_speed_kmh,
        ),
    ]
    return {e.feed: e for e in enrichers}
