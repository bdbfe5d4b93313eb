"""The feed registry in core: names and measurements as data, specs registered by the collectors' plugins."""

from __future__ import annotations

import pytest

from collectors.feeds.air.schema import SPEC as AIR
from core.feeds import FEED_SPECS, FEEDS, MEASUREMENTS, FeedRegistry, FeedsNotRegistered, FeedSpec, measurement_for


def test_every_feed_name_has_its_registered_spec_and_measurement() -> None:
    assert tuple(FEED_SPECS) == FEEDS == ("air", "flood", "energy", "bus")
    assert {name: spec.measurement for name, spec in FEED_SPECS.items()} == MEASUREMENTS


def test_reading_an_empty_registry_fails_loudly_instead_of_saying_no_feeds() -> None:
    empty = FeedRegistry()
    with pytest.raises(FeedsNotRegistered, match=r"import collectors\.feeds"):
        _ = "air" in empty
    with pytest.raises(FeedsNotRegistered):
        list(empty)
    with pytest.raises(FeedsNotRegistered):
        empty["air"]
    empty.register(AIR)
    with pytest.raises(KeyError):  # registered, but not this feed: the ordinary "no such key"
        empty["flood"]


def test_a_spec_that_contradicts_the_names_is_refused() -> None:
    registry = FeedRegistry()
    with pytest.raises(ValueError, match="unknown feed 'rain'"):
        registry.register(FeedSpec("rain", "rain", AIR.model, "Rain gauge", "มาตรวัดฝน"))
    with pytest.raises(ValueError, match="measurement 'air'"):
        registry.register(FeedSpec("air", "air", AIR.model, "Air", "อากาศ"))
    registry.register(AIR)
    registry.register(AIR)  # the same spec again (a module imported twice) is harmless
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(FeedSpec("air", "air_quality", AIR.model, "Air", "อากาศ"))
    assert list(registry) == ["air"]


def test_measurement_needs_no_registered_spec_and_names_the_known_feeds() -> None:
    assert measurement_for("flood") == "water_level"
    with pytest.raises(KeyError, match="known feeds: air, flood, energy, bus"):
        measurement_for("rain")
