"""Shared building blocks for feed schemas: typed, range-checked canonical fields.

Our own contract is strict (Home Assistant style): a float field accepts JSON numbers (an int such as `12`
is stored as float 12.0, so InfluxDB field types never change), a bool field accepts true/false, an int
field accepts whole numbers; anything else, or a value out of range, rejects the message with the field named.
Vendor quirks (numbers as strings, sentinels, units) are handled before this, by the profile mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt


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


__all__ = ["Annotated", "FeedModel", "FeedSpec", "Field", "Measure", "StrictBool", "StrictInt"]
