"""The float fast path of the AQI sub-indices agrees with the exact (Decimal) computation everywhere."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.domain import aqi

POLLUTANTS = ["pm25", "pm10", "o3", "co", "no2", "so2"]


def exact_thai(p: str, c: float) -> int:
    return aqi.round_half_up(aqi.thai_sub_index_exact(p, c))


def exact_us(p: str, c: float) -> int:
    return min(aqi.round_half_up(aqi.us_sub_index_exact(p, c)), aqi.US_AQI_CAP)


def grid(top: float, step: float) -> list[float]:
    """Every step up to past the top band, and a quarter step either side of each."""
    out: list[float] = []
    for n in range(int(top / step) + 2):
        out += [n * step, n * step + step / 4, max(0.0, n * step - step / 4)]
    return out


@pytest.mark.parametrize("pollutant", POLLUTANTS)
def test_fast_path_matches_exact_on_every_reporting_step_and_between(pollutant: str) -> None:
    thai_top = float(aqi.THAI_TABLE[pollutant][-1].c_hi) * 1.3
    thai = [c for c in grid(thai_top, 0.05) if aqi.thai_sub_index(pollutant, c) != exact_thai(pollutant, c)]
    us_top = float(aqi.US_TABLE[pollutant][-1].c_hi) * 1.1
    us_step = float(aqi.US_TRUNCATION[pollutant])
    us = [c for c in grid(us_top, us_step) if aqi.us_sub_index(pollutant, c) != exact_us(pollutant, c)]
    assert (thai, us) == ([], [])


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(POLLUTANTS), st.floats(min_value=0, max_value=2000, allow_nan=False))
def test_fast_path_matches_exact_for_any_concentration(pollutant: str, c: float) -> None:
    assert aqi.thai_sub_index(pollutant, c) == exact_thai(pollutant, c)
    assert aqi.us_sub_index(pollutant, c) == exact_us(pollutant, c)


def test_the_published_half_up_example_still_holds() -> None:
    assert aqi.thai_sub_index("no2", 30.0) == 13  # Air4Thai: NO2 30 ppb -> 13 (formula 12.5)
    assert Decimal("12.5") == aqi.thai_sub_index_exact("no2", 30.0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(POLLUTANTS), st.integers(min_value=0, max_value=600), st.sampled_from([1.0, 0.1, 0.05]))
def test_a_remembered_exact_result_is_the_exact_result(pollutant: str, n: int, step: float) -> None:
    """Values on a reporting step take the exact path, whose results are memoised: asked again (from the memo),
    the answer is still the exact one."""
    c = n * step
    for _ in range(2):
        assert aqi.thai_sub_index(pollutant, c) == exact_thai(pollutant, c)
        assert aqi.us_sub_index(pollutant, c) == exact_us(pollutant, c)


@pytest.mark.parametrize("pollutant", POLLUTANTS)
def test_fast_path_above_the_table_matches_exact(pollutant: str) -> None:
    """A haze episode keeps means above the tables (Thai: the ">200" extrapolation; US: the top band's slope)
    for days; the float path there agrees with the exact one on every reporting step, between them, and on the
    ">200" breakpoint itself, up to four times the top of each table."""
    thai_top = float(aqi.THAI_TABLE[pollutant][-1].c_hi)
    above_200 = float(aqi.THAI_ABOVE_200_LO[pollutant])
    thai = [c for c in [above_200, *(v for v in grid(thai_top * 4, 0.05) if v > thai_top)]
            if aqi.thai_sub_index(pollutant, c) != exact_thai(pollutant, c)]
    us_top = float(aqi.US_TABLE[pollutant][-1].c_hi)
    us_step = float(aqi.US_TRUNCATION[pollutant])
    us = [c for c in grid(us_top * 4, us_step) if c > us_top
          and aqi.us_sub_index(pollutant, c) != exact_us(pollutant, c)]
    assert (thai, us) == ([], [])
