"""Energy: register rollover and reset, TOU (Bangkok time, Thai holidays), CO2e, 15-minute demand, PF."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from collectors.domain.energy import (
    EnergyEnricher,
    co2e_kg,
    emission_factor,
    excess_reactive_kvar,
    power_factor_charge_applies,
    power_factor_from_ratio,
    register_interval,
    tou_period,
)
from core.model import DeviceInfo, FieldValue, Reading

S = 1_000_000_000
ICT = timezone(timedelta(hours=7))  # Thailand, UTC+7, no DST
DEVICE = DeviceInfo(device_id="m-1", feed="energy", city="bkk", district="pathumwan")


def bkk_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Bangkok wall-clock time -> UTC nanoseconds."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=ICT).timestamp()) * S


def _reading(t_ns: int, register: float | None) -> Reading:
    fields: dict[str, FieldValue] = {} if register is None else {"energy_kwh": register}
    return Reading("m-1", "energy", "bkk", "pathumwan", t_ns, fields)


def test_bkk_helper_is_utc_plus_7() -> None:
    assert bkk_ns(2026, 4, 8, 9, 0) == int(datetime(2026, 4, 8, 2, 0, tzinfo=UTC).timestamp()) * S


# ---------------------------------------------------------------------------------------- TOU


@pytest.mark.parametrize(
    ("when", "period"),
    [
        ((2026, 4, 8, 12, 0), "on_peak"),  # Wednesday noon
        ((2026, 4, 8, 9, 0), "on_peak"),  # 09:00 starts on-peak
        ((2026, 4, 8, 8, 59, 59), "off_peak"),
        ((2026, 4, 8, 21, 59, 59), "on_peak"),
        ((2026, 4, 8, 22, 0), "off_peak"),  # 22:00 starts off-peak
        ((2026, 4, 7, 9, 30), "on_peak"),  # Tuesday 09:30 Bangkok = 02:30 UTC (off-peak if UTC were used)
        ((2026, 4, 11, 12, 0), "off_peak"),  # Saturday
        ((2026, 4, 12, 12, 0), "off_peak"),  # Sunday
        ((2026, 4, 13, 12, 0), "off_peak"),  # Monday, Songkran
        ((2026, 4, 6, 12, 0), "off_peak"),  # Monday, Chakri Memorial Day
        ((2026, 5, 1, 12, 0), "off_peak"),  # Friday, Labour Day
        ((2026, 4, 16, 12, 0), "on_peak"),  # Thursday after Songkran: a working day again
    ],
)
def test_tou_period(when: tuple[int, ...], period: str) -> None:
    assert tou_period(bkk_ns(*when)) == period


def test_tou_uses_bangkok_date_not_utc_date() -> None:
    # Saturday 2026-04-11 06:00 Bangkok is still Friday 23:00 UTC: off-peak (weekend in Thailand).
    assert tou_period(int(datetime(2026, 4, 10, 23, 0, tzinfo=UTC).timestamp()) * S) == "off_peak"
    # Thursday 2026-04-16 03:00 UTC is 10:00 in Bangkok: on-peak on a working day.
    assert tou_period(int(datetime(2026, 4, 16, 3, 0, tzinfo=UTC).timestamp()) * S) == "on_peak"


# ------------------------------------------------------------------------------ register intervals


def test_register_rising() -> None:
    assert register_interval(100.0, 101.5, 1_000_000.0) == pytest.approx(1.5)
    assert register_interval(100.0, 100.0, 1_000_000.0) == 0.0


def test_register_rollover() -> None:
    # A 99999.9 display wraps at 100000: 99999.5 -> 0.7 is 0.5 + 0.7 = 1.2 kWh.
    assert register_interval(99999.5, 0.7, 100_000.0) == pytest.approx(1.2)
    # A 999999 display wraps at 1000000: 999998 -> 3 is 5 kWh.
    assert register_interval(999_998.0, 3.0, 1_000_000.0) == pytest.approx(5.0)


def test_register_reset_is_neither_negative_nor_huge() -> None:
    assert register_interval(5234.2, 0.3, 100_000.0) is None
    assert register_interval(5234.2, 0.3, None) is None
    # Near the top but the new value is not near zero: a replaced meter, not a wrap.
    assert register_interval(99_990.0, 40_000.0, 100_000.0) is None


def test_enricher_survives_reset_and_rollover() -> None:
    e = EnergyEnricher(register_rollover_kwh=100_000.0)
    t = bkk_ns(2026, 4, 8, 10, 0)
    seq = [(0, 5234.2), (300, 5235.0), (600, 0.3), (900, 1.1)]
    out = []
    for dt, reg in seq:
        r = _reading(t + dt * S, reg)
        e.enrich(r, DEVICE)
        out.append(r.fields.get("interval_kwh"))
    assert out[0] is None  # first reading: baseline only
    assert out[1] == pytest.approx(0.8)
    assert out[2] is None  # reset: energy lost with the old count is not guessed
    assert out[3] == pytest.approx(0.8)  # counting resumes from the new baseline

    e2 = EnergyEnricher(register_rollover_kwh=1_000_000.0)
    dev = DeviceInfo(device_id="m-1", feed="energy", city="bkk", district="p", site={"register_rollover_kwh": 100000})
    e2.enrich(_reading(t, 99_999.6), dev)
    r = _reading(t + 300 * S, 0.4)
    e2.enrich(r, dev)
    assert r.fields["interval_kwh"] == pytest.approx(0.8)  # per-device rollover from the site


def test_enricher_tou_tag_always_and_late_readings_ignored() -> None:
    e = EnergyEnricher()
    t = bkk_ns(2026, 4, 11, 10, 0)  # Saturday
    no_register = _reading(t, None)
    e.enrich(no_register, DEVICE)
    assert no_register.tags == {"tou": "off_peak"}
    assert no_register.fields == {}
    e.enrich(_reading(t, 100.0), DEVICE)
    e.enrich(_reading(t + 600 * S, 102.0), DEVICE)
    late = _reading(t + 300 * S, 101.0)
    e.enrich(late, DEVICE)
    assert "interval_kwh" not in late.fields and late.tags["tou"] == "off_peak"
    nxt = _reading(t + 900 * S, 103.0)
    e.enrich(nxt, DEVICE)
    assert nxt.fields["interval_kwh"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------- CO2e


def test_co2e_uses_tgo_2026_factor() -> None:
    assert emission_factor(2026) == pytest.approx(0.4750)
    assert co2e_kg(10.0, 2026) == pytest.approx(4.75)


def test_emission_factor_per_year() -> None:
    factors = {2026: 0.4750, 2028: 0.4500}
    assert emission_factor(2027, factors) == pytest.approx(0.4750)
    assert emission_factor(2029, factors) == pytest.approx(0.4500)
    assert emission_factor(2024, factors) == pytest.approx(0.4750)  # before the first entry: the first one
    with pytest.raises(ValueError):
        emission_factor(2026, {})


def test_enricher_co2e_year_is_bangkok_year() -> None:
    e = EnergyEnricher(emission_factors={2026: 0.5, 2027: 0.4})
    # 2026-12-31 17:55 UTC and 18:05 UTC: the second is already 2027-01-01 01:05 in Bangkok.
    t0 = int(datetime(2026, 12, 31, 17, 55, tzinfo=UTC).timestamp()) * S
    e.enrich(_reading(t0, 10.0), DEVICE)
    r = _reading(t0 + 600 * S, 12.0)
    e.enrich(r, DEVICE)
    assert r.fields["co2e_kg"] == pytest.approx(0.8)


# -------------------------------------------------------------------------------------- demand


def test_demand_15min_is_reported_when_the_block_completes() -> None:
    e = EnergyEnricher()
    t = bkk_ns(2026, 4, 8, 10, 0)
    e.enrich(_reading(t, 1000.0), DEVICE)
    demands = []
    for minutes, reg in [(5, 1001.0), (10, 1002.0), (15, 1003.0), (20, 1005.0), (30, 1006.0)]:
        r = _reading(t + minutes * 60 * S, reg)
        e.enrich(r, DEVICE)
        demands.append(r.fields.get("demand_15min_kw"))
    # Block 10:00–10:15 holds 3 kWh: 12 kW, reported by the 10:15 reading that completes it; 10:15–10:30 holds
    # 2 + 1 kWh: 12 kW again, reported at 10:30. Readings inside a block carry no (partial, under-reading) value.
    assert demands == [None, None, pytest.approx(12.0), None, pytest.approx(12.0)]


def test_demand_interpolates_an_interval_across_the_block_boundary() -> None:
    e = EnergyEnricher()
    t = bkk_ns(2026, 4, 8, 10, 0)
    e.enrich(_reading(t, 48.0), DEVICE)
    e.enrich(_reading(t + 600 * S, 50.0), DEVICE)  # 10:00 -> 10:10, 2 kWh
    r = _reading(t + 1200 * S, 52.0)  # 10:10 -> 10:20, 2 kWh; half of it (10:10–10:15) completes the block
    e.enrich(r, DEVICE)
    assert r.fields["demand_15min_kw"] == pytest.approx(12.0)  # (2 + 1) kWh / 0.25 h


def test_first_block_after_a_meter_appears_is_not_reported_as_a_low_demand() -> None:
    e = EnergyEnricher()
    t = bkk_ns(2026, 4, 8, 10, 10)
    e.enrich(_reading(t, 50.0), DEVICE)  # first seen at 10:10: block 10:00–10:15 is only partly counted
    r = _reading(t + 600 * S, 52.0)
    e.enrich(r, DEVICE)
    assert "demand_15min_kw" not in r.fields


def test_long_gap_gives_the_average_power_for_its_blocks() -> None:
    e = EnergyEnricher()
    t = bkk_ns(2026, 4, 8, 10, 0)
    e.enrich(_reading(t, 0.0), DEVICE)
    r = _reading(t + 86_400 * S, 240.0)  # a day later: 10 kW on average
    e.enrich(r, DEVICE)
    assert r.fields["demand_15min_kw"] == pytest.approx(10.0)


def test_enricher_state_round_trip() -> None:
    a = EnergyEnricher()
    t = bkk_ns(2026, 4, 8, 10, 0)
    a.enrich(_reading(t, 10.0), DEVICE)
    a.enrich(_reading(t + 300 * S, 11.0), DEVICE)
    b = EnergyEnricher()
    b.import_state(json.loads(json.dumps(a.export_state())) | {"junk": 3})
    b.enrich(_reading(t + 600 * S, 12.5), DEVICE)
    r = _reading(t + 900 * S, 13.0)
    b.enrich(r, DEVICE)
    assert r.fields["interval_kwh"] == pytest.approx(0.5)
    assert r.fields["demand_15min_kw"] == pytest.approx(12.0)  # (1 + 1.5 + 0.5) kWh / 0.25 h


# -------------------------------------------------------------------------------------- power factor


def test_power_factor_rule() -> None:
    assert power_factor_from_ratio(0.6197) == pytest.approx(0.85, abs=5e-4)
    assert not power_factor_charge_applies(100.0, 61.0)
    assert power_factor_charge_applies(100.0, 62.0)
    assert excess_reactive_kvar(100.0, 70.0) == pytest.approx(70.0 - 61.97)
    assert excess_reactive_kvar(100.0, 50.0) == 0.0


def test_register_resolution_over_a_short_gap_is_not_an_implausible_interval() -> None:
    e = EnergyEnricher()
    dev = DeviceInfo(device_id="m-1", feed="energy", city="bkk", district="p", site={"contracted_kw": 100})
    t = bkk_ns(2026, 4, 8, 10, 0)
    e.enrich(_reading(t, 500.000), dev)
    r = _reading(t + 1_000_000, 500.001)  # 1 ms later, one Wh more: "3600 kW" of rounding
    e.enrich(r, dev)
    assert r.fields["interval_kwh"] == pytest.approx(0.001)


def test_jump_far_beyond_the_contract_is_rejected_and_counting_restarts() -> None:
    from collectors.errors import RejectedMessage

    e = EnergyEnricher()
    dev = DeviceInfo(device_id="m-1", feed="energy", city="bkk", district="p", site={"contracted_kw": 100})
    t = bkk_ns(2026, 4, 8, 10, 0)
    e.enrich(_reading(t, 8.2), dev)
    with pytest.raises(RejectedMessage) as caught:
        e.enrich(_reading(t + 900 * S, 999_990.0), dev)
    assert caught.value.reason == "implausible_interval" and "10 × the contracted 100 kW" in caught.value.detail
    nxt = _reading(t + 1800 * S, 1_000_000.0)
    e.enrich(nxt, dev)
    assert nxt.fields["interval_kwh"] == pytest.approx(10.0)
