"""A fast path for the feed schemas' common case: a well-formed canonical payload, checked without pydantic.

`FastCheck(model).fields(values)` returns exactly what `model.model_validate(values).model_dump(exclude_none=True)`
returns — the same keys in the model's field order, the same values and types — or None, which means "not
decided here: ask pydantic". It only decides what it can decide for certain:

- a float field (`Measure`: strict float with `ge`/`le`) given a float within its bounds, or an int within its
  bounds and within ±2**53 (exactly representable, stored as that float, as pydantic's strict float does);
- a strict bool field given a bool; a strict int field (with or without bounds) given an int within them;
- a key the model does not have (ignored, as `extra="ignore"` does), a None value (left out, as
  `exclude_none` does).

Anything else — NaN, ±inf, a value out of range, a bool for a number, a number as a string, a list, a huge int,
a field of a kind not listed — returns None, so pydantic validates it and a rejection keeps its exact reason
and text. A model with validators, aliases, serializers or another `extra` policy gets no fast path at all.
The equivalence is property-tested against pydantic (tests/collectors/feeds/test_fastcheck.py).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.types import Strict

__all__ = ["FastCheck"]

_EXACT_INT = 2**53  # ints up to this size convert to float exactly
_FLOAT, _BOOL, _INT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Field:
    rank: int  # position in the model (the order model_dump keeps)
    kind: int
    lo: float | int | None
    hi: float | int | None


def _bounds(metadata: list[Any]) -> tuple[bool, float | int | None, float | int | None] | None:
    """(strict, ge, le) from a field's metadata; None when it holds anything else (gt, multiple_of, ...)."""
    strict = False
    lo: float | int | None = None
    hi: float | int | None = None
    for item in metadata:
        if isinstance(item, Strict):
            strict = item.strict
        elif isinstance(item, annotated_types.Ge) and type(item.ge) in (int, float):
            lo = item.ge  # type: ignore[assignment]
        elif isinstance(item, annotated_types.Le) and type(item.le) in (int, float):
            hi = item.le  # type: ignore[assignment]
        else:
            return None
    return strict, lo, hi


def _optional_of(annotation: Any) -> Any:
    """`X` for `X | None` / `Optional[X]`; None for anything else."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and len(typing.get_args(annotation)) == 2 else None


def _field(rank: int, info: FieldInfo) -> _Field | None:
    """How to check one field fast, or None when only pydantic may decide it."""
    if info.alias is not None or info.validation_alias is not None or info.default is not None:
        return None
    inner = _optional_of(info.annotation)
    if inner is None:
        return None
    metadata = list(info.metadata)
    if typing.get_origin(inner) is typing.Annotated:  # StrictBool | None, StrictInt | None
        inner, *extra = typing.get_args(inner)
        metadata += extra
    bounds = _bounds(metadata)
    if bounds is None or not bounds[0]:  # only strict fields: a lax one would coerce "12" or 1.0 -> 1
        return None
    _, lo, hi = bounds
    if inner is float:
        return _Field(rank, _FLOAT, lo, hi)
    if inner is bool and lo is None and hi is None:
        return _Field(rank, _BOOL, None, None)
    if inner is int:
        return _Field(rank, _INT, lo, hi)
    return None


class FastCheck:
    """The fast path of one feed model (see the module doc)."""

    def __init__(self, model: type[BaseModel]) -> None:
        decorators = model.__pydantic_decorators__
        plain = (
            model.model_config.get("extra") == "ignore"
            and not model.model_config.get("populate_by_name")
            and model.model_config.get("alias_generator") is None
            and not any((decorators.validators, decorators.field_validators, decorators.root_validators,
                         decorators.model_validators, decorators.field_serializers, decorators.model_serializers,
                         decorators.computed_fields))
        )
        checks = {name: _field(rank, info) for rank, (name, info) in enumerate(model.model_fields.items())}
        self.enabled = plain and all(c is not None for c in checks.values())
        self._checks: dict[str, _Field] = {k: c for k, c in checks.items() if c is not None}

    def fields(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """The validated fields in model order, or None: pydantic must decide."""
        if not self.enabled:
            return None
        checks = self._checks
        out: dict[str, Any] = {}
        last_rank = -1
        ordered = True
        for key, value in values.items():
            check = checks.get(key)
            if check is None or value is None:
                continue  # not a field of the model (ignored), or None (left out of the dump)
            t = type(value)
            kind = check.kind
            if kind == _FLOAT:
                if t is int:
                    if not -_EXACT_INT <= value <= _EXACT_INT:
                        return None
                    value = float(value)
                elif t is not float:
                    return None
            elif kind == _BOOL:
                if t is not bool:
                    return None
            elif t is not int:  # _INT: strict, so no bool and no float
                return None
            lo, hi = check.lo, check.hi
            # written so that NaN fails: every comparison with NaN is False
            if (lo is not None and not value >= lo) or (hi is not None and not value <= hi):
                return None
            out[key] = value
            if check.rank < last_rank:
                ordered = False
            last_rank = check.rank
        if not ordered:
            return dict(sorted(out.items(), key=lambda kv: checks[kv[0]].rank))
        return out
