"""The simulated city: deterministic, scalable, registrable."""

from __future__ import annotations

import csv
import io
from collections import Counter

import pytest

from core.feeds import FEEDS
from nakhon.sim.city import DEFAULT_MIX, City, split_counts


def test_default_city_is_laem_chabang_with_200_devices() -> None:
    devices = City().devices()
    assert len(devices) == 200
    assert Counter(d.feed for d in devices) == {"air": 60, "flood": 40, "energy": 60, "bus": 40}
    assert {d.city for d in devices} == {"laem-chabang"}
    assert {"ทุ่งสุขลา", "บางละมุง", "ศรีราชา", "บ่อวิน"} <= {d.district for d in devices}
    for d in devices:
        assert 12.9 < d.lat < 13.3 and 100.8 < d.lon < 101.2, d
        assert d.topic == f"city/laem-chabang/{d.feed}/{d.device_id}"


def test_same_seed_same_city_other_seed_other_city() -> None:
    assert City(seed=7).devices() == City(seed=7).devices()
    assert City(seed=7).registry_csv() == City(seed=7).registry_csv()
    a, b = City(seed=7).devices(), City(seed=8).devices()
    assert [d.device_id for d in a] == [d.device_id for d in b]  # ids are positional
    assert [(d.lat, d.lon) for d in a] != [(d.lat, d.lon) for d in b]


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 50, 199, 200, 201, 1000])
def test_device_count_scales_proportionally(n: int) -> None:
    devices = City().devices(n)
    assert len(devices) == n
    counts = Counter(d.feed for d in devices)
    total = sum(DEFAULT_MIX.values())
    for feed, share in DEFAULT_MIX.items():
        assert abs(counts.get(feed, 0) - n * share / total) < 1
    assert len({d.device_id for d in devices}) == n


def test_smaller_city_is_a_prefix_of_the_bigger_one() -> None:
    small, big = City().devices(50), City().devices(400)
    big_ids = {d.device_id: d for d in big}
    for d in small:
        assert big_ids[d.device_id] == d


def test_split_counts_sums_exactly() -> None:
    for n in range(0, 300):
        assert sum(split_counts(n, DEFAULT_MIX).values()) == n


def test_sites_carry_what_the_registry_needs() -> None:
    for d in City().devices():
        if d.feed == "flood":
            assert d.site["bank_level_m"] > d.site["ground_level_m"] + 1.0
        elif d.feed == "energy":
            assert d.site["contracted_kw"] > 0
        else:
            assert d.site == {}
        if d.feed == "bus":
            assert len(d.route) >= 5 and d.route[0] == (d.lat, d.lon) and d.school


def test_registry_csv_parses_with_unique_ids() -> None:
    city = City()
    rows = list(csv.DictReader(io.StringIO(city.registry_csv())))
    assert len(rows) == 200
    assert list(rows[0])[:7] == ["device_id", "feed", "city", "district", "lat", "lon", "name"]
    assert list(rows[0])[7:] == ["site_bank_level_m", "site_ground_level_m", "site_contracted_kw"]
    assert len({r["device_id"] for r in rows}) == len(rows)
    assert {r["feed"] for r in rows} == set(FEEDS)
    by_id = {d.device_id: d for d in city.devices()}
    for row in rows:
        d = by_id[row["device_id"]]
        assert (float(row["lat"]), float(row["lon"])) == pytest.approx((d.lat, d.lon), abs=1e-6)
        assert row["name"] == d.name and row["district"] == d.district
        if d.feed == "flood":
            assert float(row["site_bank_level_m"]) == d.site["bank_level_m"]
            assert float(row["site_ground_level_m"]) == d.site["ground_level_m"]
            assert row["site_contracted_kw"] == ""
        elif d.feed == "energy":
            assert float(row["site_contracted_kw"]) == d.site["contracted_kw"]
        else:
            assert row["site_bank_level_m"] == row["site_contracted_kw"] == ""


def test_registry_csv_of_a_subset() -> None:
    city = City()
    rows = list(csv.DictReader(io.StringIO(city.registry_csv(city.devices(10)))))
    assert [r["device_id"] for r in rows] == [d.device_id for d in city.devices(10)]
