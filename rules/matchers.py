"""Label matchers for silences: `name=value`, `name!=value`, `name=~regex`, `name!~regex` (regex fully anchored)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MATCHABLE = ("rule", "device_id", "city", "district", "feed", "severity")
_TEXT = re.compile(r"^\s*([a-z_]+)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


class Matcher(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(json_schema_extra={"enum": list(MATCHABLE)})  # the OpenAPI document names them too
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v not in MATCHABLE:
            raise ValueError(f"can match only {', '.join(MATCHABLE)}")
        return v

    @model_validator(mode="after")
    def _regex(self) -> Matcher:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return self

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _TEXT.match(text)
        if not m:
            raise ValueError(f"invalid matcher {text!r}: use name=value, name!=value, name=~regex or name!~regex")
        value = m.group(3)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return cls(name=m.group(1), op=m.group(2), value=value)  # type: ignore[arg-type]

    def matches(self, labels: dict[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = re.fullmatch(self.value, got) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def matches_all(matchers: list[dict[str, str]] | list[Matcher], labels: dict[str, str]) -> bool:
    items = [m if isinstance(m, Matcher) else Matcher.model_validate(m) for m in matchers]
    return bool(items) and all(m.matches(labels) for m in items)
