"""The fields a rule on a feed can use: the feed schema's canonical fields (core.feeds, registered by
collectors/feeds) and the derived fields and tags (core/fields.py), with type and range — what
`rules check` checks against."""

from __future__ import annotations

import types
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from annotated_types import Ge, Le

from core.feeds import FEED_SPECS
from core.fields import DERIVED_FIELDS, DERIVED_TAGS, FieldKind


@dataclass(frozen=True, slots=True)
class FieldInfo:
    name: str
    kind: FieldKind
    lo: float | None
    hi: float | None
    source: str  # canonical | derived | tag
    values: tuple[str, ...] = ()  # a tag's possible values

    def range_text(self) -> str:
        lo = "" if self.lo is None else f"{self.lo:g}"
        hi = "" if self.hi is None else f"{self.hi:g}"
        return f"{lo}–{hi}"


def _kind(annotation: Any) -> FieldKind:
    args = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    # StrictBool / StrictInt are Annotated[bool | int, Strict()]
    args = tuple(get_args(a)[0] if get_origin(a) is Annotated else a for a in args)
    names = {getattr(a, "__name__", str(a)) for a in args if a is not type(None)}
    if "bool" in names:
        return "bool"
    if "int" in names:
        return "int"
    if "str" in names:
        return "str"
    return "number"


@cache
def feed_fields(feed: str) -> dict[str, FieldInfo]:
    """Every field and tag a reading of `feed` can carry, by name."""
    out: dict[str, FieldInfo] = {}
    for name, info in FEED_SPECS[feed].model.model_fields.items():
        lo = next((float(m.ge) for m in info.metadata if isinstance(m, Ge)), None)  # type: ignore[arg-type]
        hi = next((float(m.le) for m in info.metadata if isinstance(m, Le)), None)  # type: ignore[arg-type]
        out[name] = FieldInfo(name, _kind(info.annotation), lo, hi, "canonical")
    for d in DERIVED_FIELDS.get(feed, ()):
        out[d.name] = FieldInfo(d.name, d.kind, d.lo, d.hi, "derived")
    for tag, values in DERIVED_TAGS.get(feed, {}).items():
        out[tag] = FieldInfo(tag, "str", None, None, "tag", values)
    return out
