"""Flood: percent of bank (ThaiWater storage_percent), legend, ultrasonic level, rise rate."""

from __future__ import annotations

import json

import pytest

from collectors.domain.flood import (
    BankLegendBand,
    FloodEnricher,
    bank_status,
    level_from_distance,
    level_pct_bank,
    rise_cm_per_10min,
)
from core.model import DeviceInfo, FieldValue, Reading

S = 1_000_000_000
T0 = 1_780_000_000 * S
SITE = {"bank_level_m": 10.0, "ground_level_m": 2.0}
DEVICE = DeviceInfo(device_id="wl-1", feed="flood", city="chiangmai", district="mueang", site=SITE)


def _reading(t_ns: int, level: float | None) -> Reading:
    fields: dict[str, FieldValue] = {} if level is None else {"level_m": level}
    return Reading("wl-1", "flood", "chiangmai", "mueang", t_ns, fields)


def test_level_pct_bank_formula() -> None:
    # (6 - 2) / (10 - 2) * 100 = 50
    assert level_pct_bank(6.0, 10.0, 2.0) == pytest.approx(50.0)
    assert level_pct_bank(10.0, 10.0, 2.0) == pytest.approx(100.0)
    assert level_pct_bank(11.0, 10.0, 2.0) == pytest.approx(112.5)
    assert level_pct_bank(1.0, 10.0, 2.0) == pytest.approx(-12.5)  # below ground level is reported as is


def test_level_pct_bank_rejects_bad_survey() -> None:
    assert level_pct_bank(5.0, 2.0, 2.0) is None
    assert level_pct_bank(5.0, 1.0, 2.0) is None


@pytest.mark.parametrize(
    ("pct", "status"),
    [(0, "critically_low"), (10, "critically_low"), (10.5, "low"), (30, "low"), (30.1, "normal"), (70, "normal"),
     (85, "high"), (100, "high"), (100.01, "overbank"), (250, "overbank")],
)
def test_thaiwater_legend(pct: float, status: str) -> None:
    assert bank_status(pct).status == status


def test_legend_is_configurable() -> None:
    legend = [BankLegendBand(upper_pct=80, status="ok", name_th="ปกติ", name_en="OK"),
              BankLegendBand(upper_pct=None, status="alert", name_th="เฝ้าระวัง", name_en="Alert")]
    assert bank_status(85, legend).status == "alert"
    assert FloodEnricher(legend=legend).status(50).status == "ok"


def test_level_from_distance() -> None:
    assert level_from_distance(5.0, 1.25) == pytest.approx(3.75)


def test_rise_rate_scaled_to_10_minutes() -> None:
    # +5 cm in 5 minutes is +10 cm per 10 minutes; -3 cm in 20 minutes is -1.5.
    assert rise_cm_per_10min(T0, 2.00, T0 + 300 * S, 2.05) == pytest.approx(10.0)
    assert rise_cm_per_10min(T0, 2.00, T0 + 1200 * S, 1.97) == pytest.approx(-1.5)


def test_rise_rate_ignores_long_gaps_and_non_increasing_time() -> None:
    assert rise_cm_per_10min(T0, 2.0, T0 + 3601 * S, 2.5) is None
    assert rise_cm_per_10min(T0, 2.0, T0 + 3600 * S, 2.5) is not None
    # 50 cm over 120 min (12 × 10 min) with a longer allowed gap.
    assert rise_cm_per_10min(T0, 2.0, T0 + 7200 * S, 2.5, max_gap_s=7200) == pytest.approx(50 / 12)
    assert rise_cm_per_10min(T0, 2.0, T0, 2.5) is None
    assert rise_cm_per_10min(T0, 2.0, T0 - S, 2.5) is None


def test_enricher_sets_pct_and_rise() -> None:
    e = FloodEnricher()
    first = _reading(T0, 6.0)
    e.enrich(first, DEVICE)
    assert first.fields["level_pct_bank"] == pytest.approx(50.0)
    assert "rise_cm_per_10min" not in first.fields
    second = _reading(T0 + 600 * S, 6.2)
    e.enrich(second, DEVICE)
    assert second.fields["rise_cm_per_10min"] == pytest.approx(20.0)
    assert second.fields["level_pct_bank"] == pytest.approx(52.5)


def test_enricher_without_survey_sets_only_rise() -> None:
    e = FloodEnricher()
    dev = DeviceInfo(device_id="wl-1", feed="flood", city="c", district="d", site={"bank_level_m": 10.0})
    e.enrich(_reading(T0, 1.0), dev)
    r = _reading(T0 + 300 * S, 1.1)
    e.enrich(r, dev)
    assert "level_pct_bank" not in r.fields
    assert r.fields["rise_cm_per_10min"] == pytest.approx(20.0)


def test_enricher_late_reading_is_not_a_baseline() -> None:
    e = FloodEnricher()
    e.enrich(_reading(T0 + 600 * S, 3.0), DEVICE)
    late = _reading(T0, 2.0)
    e.enrich(late, DEVICE)
    assert "rise_cm_per_10min" not in late.fields
    nxt = _reading(T0 + 1200 * S, 3.1)
    e.enrich(nxt, DEVICE)
    assert nxt.fields["rise_cm_per_10min"] == pytest.approx(10.0)  # from 3.0, not from the late 2.0


def test_enricher_gap_longer_than_max_gives_no_rise() -> None:
    e = FloodEnricher(rise_max_gap_s=900)
    e.enrich(_reading(T0, 3.0), DEVICE)
    r = _reading(T0 + 1800 * S, 3.5)
    e.enrich(r, DEVICE)
    assert "rise_cm_per_10min" not in r.fields
    r2 = _reading(T0 + 2400 * S, 3.6)
    e.enrich(r2, DEVICE)
    assert r2.fields["rise_cm_per_10min"] == pytest.approx(10.0)


def test_enricher_no_level_no_fields() -> None:
    e = FloodEnricher()
    r = _reading(T0, None)
    e.enrich(r, DEVICE)
    assert r.fields == {}


def test_enricher_state_round_trip() -> None:
    a = FloodEnricher()
    a.enrich(_reading(T0, 4.0), DEVICE)
    b = FloodEnricher()
    b.import_state(json.loads(json.dumps(a.export_state())) | {"broken": {"time_ns": "x"}})
    r = _reading(T0 + 300 * S, 4.1)
    b.enrich(r, DEVICE)
    assert r.fields["rise_cm_per_10min"] == pytest.approx(20.0)
