"""default_enrichers / DomainConfig wiring."""

from __future__ import annotations

import json
from pathlib import Path

from collectors.domain import DomainConfig, default_enrichers
from collectors.domain.bus import BusEnricher
from collectors.domain.energy import EnergyEnricher
from core.feeds import FEEDS
from core.model import DeviceInfo, Reading


def test_one_enricher_per_feed() -> None:
    enrichers = default_enrichers()
    assert set(enrichers) == set(FEEDS)
    assert all(e.feed == feed for feed, e in enrichers.items())


def test_defaults_from_reference() -> None:
    cfg = DomainConfig()
    assert cfg.emission_factors_kgco2e_per_kwh == {2026: 0.4750}
    assert cfg.speed_limits_kmh == {"municipal": 60, "rural": 70, "divided": 80, "expressway": 90}
    assert [b.upper_pct for b in cfg.flood_legend] == [10, 30, 70, 100, None]


def test_config_reaches_enrichers(tmp_path: Path) -> None:
    zones = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "school", "speed_limit_kmh": 30},
        "geometry": {"type": "Polygon", "coordinates": [[[99, 18], [99.1, 18], [99.1, 18.1], [99, 18.1], [99, 18]]]},
    }]}
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps(zones), encoding="utf-8")
    cfg = DomainConfig.model_validate(
        {"speed_zones_path": str(path), "emission_factors_kgco2e_per_kwh": {"2026": 0.5}, "default_speed_limit_kmh": 50}
    )
    enrichers = default_enrichers(cfg)
    bus, energy = enrichers["bus"], enrichers["energy"]
    assert isinstance(bus, BusEnricher) and isinstance(energy, EnergyEnricher)
    assert energy.emission_factors == {2026: 0.5}
    dev = DeviceInfo(device_id="b", feed="bus", city="c", district="d")
    inside = Reading("b", "bus", "c", "d", 0, {"lat": 18.05, "lon": 99.05})
    outside = Reading("b", "bus", "c", "d", 1, {"lat": 17.0, "lon": 99.05})
    bus.enrich(inside, dev)
    bus.enrich(outside, dev)
    assert inside.fields["speed_limit_kmh"] == 30 and outside.fields["speed_limit_kmh"] == 50


def test_state_saved_from_a_future_dated_reading_is_not_restored() -> None:
    """State written before the pipeline rejected such times must not switch a device's derived values off."""
    far = 4_102_444_800 * 1_000_000_000  # 2100-01-01T00:00:00Z
    poisoned = default_enrichers()
    device = DeviceInfo("d", "air", "c", "x")
    now = 1_795_741_200 * 1_000_000_000
    for feed, fields in {"air": {"pm25_ugm3": 10.0}, "energy": {"energy_kwh": 5.0}, "flood": {"level_m": 1.0},
                         "bus": {"ignition": False, "occupancy": 2}}.items():
        poisoned[feed].enrich(Reading("d", feed, "c", "x", far, dict(fields)), device)
    saved = json.loads(json.dumps({feed: e.export_state() for feed, e in poisoned.items()}))
    restored = default_enrichers()
    for feed, enricher in restored.items():
        enricher.import_state(saved[feed])
        if feed == "air":  # per-pollutant means: the poisoned one is dropped, the empty ones stay empty
            assert not any(rm["buckets"] for rm in enricher.export_state().get("d", {}).values())
        else:
            assert enricher.export_state() == {}, feed
    air = Reading("d", "air", "c", "x", now, {"pm25_ugm3": 10.0})
    restored["air"].enrich(air, device)
    assert "aqi_th" in air.fields and "pm25_24h_ugm3" in air.fields


def test_ordinary_state_is_restored() -> None:
    before = default_enrichers()
    device = DeviceInfo("d", "energy", "c", "x")
    now = 1_795_741_200 * 1_000_000_000
    before["energy"].enrich(Reading("d", "energy", "c", "x", now, {"energy_kwh": 5.0}), device)
    after = default_enrichers()
    after["energy"].import_state(json.loads(json.dumps(before["energy"].export_state())))
    nxt = Reading("d", "energy", "c", "x", now + 900 * 1_000_000_000, {"energy_kwh": 6.0})
    after["energy"].enrich(nxt, device)
    assert nxt.fields["interval_kwh"] == 1.0
