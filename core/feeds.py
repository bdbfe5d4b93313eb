"""The feed registry: the feeds nakhon knows (names, InfluxDB measurements) and their specs, in one place.

The names and measurements are data here; each feed's schema lives in its plugin folder
(`collectors/feeds/<feed>/schema.py`, with README and sample payloads) and registers its `FeedSpec` here when
`collectors.feeds` is imported — the composition root (`nakhon`) and the tests' root conftest import it, so
components that only read specs (gateway, rules) never import the collectors. Reading the registry before
any spec is registered raises `FeedsNotRegistered` instead of answering "no feeds".

Building blocks for feed schemas: typed, range-checked canonical fields.

Our own contract is strict (Home Assistant style): a float field accepts JSON numbers (an int such as `12`
is stored as float 12.0, so InfluxDB field types never change), a bool field accepts true/false, an int
field accepts whole numbers; anything else, or a value out of range, rejects the message with the field named.
Vendor quirks (numbers as strings, sentinels, units) are handled before this, by the profile mapping.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


def Measure(lo: float, hi: float, description: str) -> Any:  # noqa: N802 - reads like a type
    """A float field, range-checked, that also accepts JSON integers (stored as float)."""
    return Annotated[float | None, Field(default=None, ge=lo, le=hi, description=description, strict=True)]


class FeedModel(BaseModel):
    """Base of every feed schema: unknown keys are ignored (kept out of the point), types are strict."""

    model_config = ConfigDict(extra="ignore", frozen=True)


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One feed: its name in topics, its InfluxDB measurement and its pydantic schema."""

    name: str
    measurement: str
    model: type[FeedModel]
    description_en: str
    description_th: str
    #: canonical field -> numbers a device sends for "no value" (treated as missing, never stored).
    sentinels: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.model.model_fields)

    def sentinel_sets(self) -> dict[str, frozenset[float]]:
        return {name: frozenset(values) for name, values in self.sentinels.items()}


#: Every feed, by its name in topics, and the InfluxDB measurement its points are stored in.
MEASUREMENTS: dict[str, str] = {"air": "air_quality", "flood": "water_level", "energy": "energy", "bus": "bus"}
FEEDS: tuple[str, ...] = tuple(MEASUREMENTS)


class FeedsNotRegistered(LookupError):
    """The feed specs were read before the feed plugins registered them (import `collectors.feeds` first)."""


class FeedRegistry(Mapping[str, FeedSpec]):
    """Feed name -> spec, filled by the plugin folders through `register`; read-only otherwise."""

    def __init__(self) -> None:
        self._specs: dict[str, FeedSpec] = {}

    def register(self, spec: FeedSpec) -> None:
        if spec.name not in MEASUREMENTS:
            raise ValueError(f"unknown feed {spec.name!r}; known feeds: {', '.join(FEEDS)}")
        if spec.measurement != MEASUREMENTS[spec.name]:
            raise ValueError(
                f"feed {spec.name!r}: measurement {spec.measurement!r}, expected {MEASUREMENTS[spec.name]!r}"
            )
        registered = self._specs.get(spec.name)
        if registered is not None and registered is not spec:
            raise ValueError(f"feed {spec.name!r} is registered twice")
        self._specs[spec.name] = spec

    def _loaded(self) -> dict[str, FeedSpec]:
        if not self._specs:
            raise FeedsNotRegistered("no feed spec is registered: import collectors.feeds (the feed plugins) first")
        return self._specs

    def __getitem__(self, feed: str) -> FeedSpec:
        try:  # the pipeline looks a spec up per message: one dict lookup when it is there
            return self._specs[feed]
        except KeyError:
            self._loaded()  # raises FeedsNotRegistered when nothing is registered yet
            raise

    def __iter__(self) -> Iterator[str]:
        # in the order of FEEDS, whatever order the plugins registered in
        specs = self._loaded()
        return iter([name for name in FEEDS if name in specs])

    def __len__(self) -> int:
        return len(self._loaded())

    def __contains__(self, feed: object) -> bool:
        return feed in self._loaded()


FEED_SPECS = FeedRegistry()


def feed_spec(feed: str) -> FeedSpec:
    try:
        return FEED_SPECS[feed]
    except KeyError:
        raise KeyError(f"unknown feed {feed!r}; known feeds: {', '.join(FEED_SPECS)}") from None


def measurement_for(feed: str) -> str:
    """The InfluxDB measurement of `feed` (from the names above: needs no registered spec)."""
    try:
        return MEASUREMENTS[feed]
    except KeyError:
        raise KeyError(f"unknown feed {feed!r}; known feeds: {', '.join(FEEDS)}") from None


__all__ = [
    "FEEDS",
    "FEED_SPECS",
    "MEASUREMENTS",
    "FeedModel",
    "FeedRegistry",
    "FeedSpec",
    "FeedsNotRegistered",
    "Measure",
    "feed_spec",
    "measurement_for",
]
