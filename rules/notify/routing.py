"""The routing tree (Alertmanager style), in YAML.

    receivers:
      - {name: ops, urls: ["mailtos://user:${SMTP_PASS}@mail.example.go.th?to=ops@example.go.th"], language: both}
      - {name: line-drivers, urls: ["line://${LINE_TOKEN}/C1234"], retry: {initial: 2s, max: 5m}}
    route:
      receiver: ops
      group_by: [rule, city]
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 4h            # reminders while firing and not acknowledged
      quiet_hours: {start: "22:00", end: "07:00"}   # Asia/Bangkok; critical alerts ignore it
      routes:
        - match: {feed: bus, severity: critical}
          receiver: line-drivers
          continue: true
          escalate: [{after: 10m, receiver: ops}]   # still not acknowledged after 10 min
          fallback: {receiver: ops, after: 10m}    # LINE failing for 10 min: tell ops by email too
    inhibit_rules:
      - {source_match: {severity: critical}, target_match: {severity: warning}, equal: [rule_group, device_id]}

Children inherit every unset setting from their parent. Matching walks the tree depth first: the deepest
matching routes win; `continue: true` lets the search go on to the next sibling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time as dtime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rules.model import ScheduleSpec
from rules.timeutil import Duration
from rules.yamlload import RuleError, RuleLoadError, YamlError, line_for, load_yaml_with_lines


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryIntervals(_Strict):
    """A receiver's own backoff: the first wait and the cap (exponential in between); unset = the service default."""

    initial: Duration | None = None
    max: Duration | None = None


class ReceiverConfig(_Strict):
    name: str
    urls: list[str] = Field(default_factory=list)  # apprise URLs; ${ENV} is expanded at start
    language: Literal["th", "en", "both"] = "both"
    send_resolved: bool = True
    retry: RetryIntervals = Field(default_factory=RetryIntervals)


class QuietHours(_Strict):
    start: dtime
    end: dtime
    days: list[Any] = Field(default_factory=lambda: list(range(7)))

    @field_validator("start", "end", mode="before")
    @classmethod
    def _sexagesimal(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return dtime(v // 60 % 24, v % 60)
        return v

    def schedule(self) -> ScheduleSpec:
        return ScheduleSpec.model_validate({"days": self.days, "start": self.start, "end": self.end})


class EscalationStep(_Strict):
    after: Duration
    receiver: str


class Fallback(_Strict):
    """A message still failing `after` this long is also handed to `receiver` (once)."""

    receiver: str
    after: Duration = 600.0


class Route(_Strict):
    receiver: str | None = None
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)
    continue_: bool = Field(False, alias="continue")
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    quiet_hours: QuietHours | None = None
    escalate: list[EscalationStep] = Field(default_factory=list)
    fallback: Fallback | None = None
    routes: list[Route] = Field(default_factory=list)

    @field_validator("match_re")
    @classmethod
    def _regex(cls, v: dict[str, str]) -> dict[str, str]:
        for key, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match_re.{key}: invalid regular expression: {exc}") from exc
        return v

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match.items()) and all(
            re.fullmatch(p, labels.get(k, "")) for k, p in self.match_re.items()
        )


class InhibitRule(_Strict):
    source_match: dict[str, str]
    target_match: dict[str, str]
    equal: list[str] = Field(default_factory=list)


class RoutingConfig(_Strict):
    receivers: list[ReceiverConfig]
    route: Route
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> RoutingConfig:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError("receiver names must be unique")
        if self.route.receiver is None:
            raise ValueError("the root route needs a receiver")

        def check(route: Route) -> None:
            fallback = [route.fallback.receiver] if route.fallback else []
            for name in [route.receiver, *(s.receiver for s in route.escalate), *fallback]:
                if name is not None and name not in names:
                    raise ValueError(f"unknown receiver {name!r}")
            for child in route.routes:
                check(child)

        check(self.route)
        return self

    def receiver(self, name: str) -> ReceiverConfig:
        return next(r for r in self.receivers if r.name == name)


@dataclass(frozen=True, slots=True)
class ResolvedRoute:
    """A route with its inherited settings filled in."""

    id: str
    receiver: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float  # 0 = no reminders
    quiet_hours: QuietHours | None
    escalate: tuple[EscalationStep, ...]
    fallback: Fallback | None = None

    def group_key(self, labels: dict[str, str]) -> str:
        return self.id + "{" + ",".join(f"{k}={labels.get(k, '')}" for k in self.group_by) + "}"


DEFAULTS: dict[str, Any] = {
    "group_by": ("rule", "city"),
    "group_wait": 30.0,
    "group_interval": 300.0,
    "repeat_interval": 4 * 3600.0,
    "quiet_hours": None,
    "fallback": None,
}


class Router:
    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self._resolved: dict[int, ResolvedRoute] = {}
        self._resolve(config.route, None, "root")

    def _resolve(self, route: Route, parent: ResolvedRoute | None, rid: str) -> None:
        def pick(name: str) -> Any:
            own = getattr(route, name)
            if own is not None:
                return tuple(own) if isinstance(own, list) else own
            return getattr(parent, name) if parent is not None else DEFAULTS[name]

        resolved = ResolvedRoute(
            id=rid,
            receiver=route.receiver or (parent.receiver if parent else ""),
            group_by=pick("group_by"),
            group_wait=pick("group_wait"),
            group_interval=pick("group_interval"),
            repeat_interval=pick("repeat_interval"),
            quiet_hours=pick("quiet_hours"),
            escalate=tuple(route.escalate) if route.escalate else (parent.escalate if parent else ()),
            fallback=pick("fallback"),
        )
        self._resolved[id(route)] = resolved
        for i, child in enumerate(route.routes):
            self._resolve(child, resolved, f"{rid}.{i}")

    def _match(self, route: Route, labels: dict[str, str]) -> list[ResolvedRoute]:
        out: list[ResolvedRoute] = []
        for child in route.routes:
            if child.matches(labels):
                out.extend(self._match(child, labels))
                if not child.continue_:
                    break
        return out or [self._resolved[id(route)]]

    def match(self, labels: dict[str, str]) -> list[ResolvedRoute]:
        return self._match(self.config.route, labels)

    def inhibited(self, target: dict[str, str], sources: list[dict[str, str]]) -> bool:
        for rule in self.config.inhibit_rules:
            if not all(target.get(k) == v for k, v in rule.target_match.items()):
                continue
            for src in sources:
                if src is target or src.get("alert_id") == target.get("alert_id"):
                    continue
                if all(src.get(k) == v for k, v in rule.source_match.items()) and all(
                    src.get(k) == target.get(k) for k in rule.equal
                ):
                    return True
        return False


def parse_routing(text: str, filename: str = "<routing>") -> RoutingConfig:
    """Parse routing YAML; errors name the file and line (RuleLoadError)."""
    try:
        data, lines = load_yaml_with_lines(text)
    except YamlError as exc:
        raise RuleLoadError([RuleError(filename, exc.line, str(exc))]) from exc
    try:
        return RoutingConfig.model_validate(data)
    except ValidationError as exc:
        errors = [
            RuleError(filename, line_for(lines, tuple(e["loc"])), f"{'.'.join(map(str, e['loc']))}: {e['msg']}")
            for e in exc.errors()
        ]
        raise RuleLoadError(errors) from exc


def load_routing(path: str | Path) -> RoutingConfig:
    p = Path(path)
    return parse_routing(p.read_text(encoding="utf-8"), str(p))


DEFAULT_ROUTING_FILE = Path(__file__).with_name("default_routing.yaml")
