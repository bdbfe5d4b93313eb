"""The feeds registry: every feed nakhon knows is registered here, in one place (as Telegraf's plugins are).

Each feed lives in its own folder with a README, its schema and sample payloads under `testdata/`.
"""

from __future__ import annotations

from collectors.feeds._schema import FeedSpec
from collectors.feeds.air.schema import SPEC as AIR
from collectors.feeds.bus.schema import SPEC as BUS
from collectors.feeds.energy.schema import SPEC as ENERGY
from collectors.feeds.flood.schema import SPEC as FLOOD

FEED_SPECS: dict[str, FeedSpec] = {spec.name: spec for spec in (AIR, FLOOD, ENERGY, BUS)}


def feed_spec(feed: str) -> FeedSpec:
    try:
        return FEED_SPECS[feed]
    except KeyError:
        raise KeyError(f"unknown feed {feed!r}; known feeds: {', '.join(FEED_SPECS)}") from None


def measurement_for(feed: str) -> str:
    return feed_spec(feed).measurement


__all__ = ["FEED_SPECS", "FeedSpec", "feed_spec", "measurement_for"]
