"""The feed plugins: each feed lives in its own folder with a README, its schema and sample payloads under
`testdata/`, and registers its spec here, in one place (as Telegraf's plugins are), in the core's registry
(`core.feeds.FEED_SPECS`, which holds the feed names and measurements)."""

from __future__ import annotations

from collectors.feeds.air.schema import SPEC as AIR
from collectors.feeds.bus.schema import SPEC as BUS
from collectors.feeds.energy.schema import SPEC as ENERGY
from collectors.feeds.flood.schema import SPEC as FLOOD
from core.feeds import FEED_SPECS, FeedSpec, feed_spec, measurement_for

for _spec in (AIR, FLOOD, ENERGY, BUS):
    FEED_SPECS.register(_spec)

__all__ = ["FEED_SPECS", "FeedSpec", "feed_spec", "measurement_for"]
