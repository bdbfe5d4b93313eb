"""The group stage: alerts of one route and receiver with the same `group_by` labels wait together
(`group_wait` before the first message, `group_interval` between messages), so a storm gives one message per
group — listing the worst alerts and how many there are — instead of one per alert."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from core.time import NS
from rules.notify.routing import ResolvedRoute
from rules.store import Alert

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(slots=True)
class Note:
    alert: Alert
    kind: str  # firing | resolved | reminder-N | escalation-N
    since_ns: int


@dataclass(slots=True)
class Group:
    receiver: str
    route: ResolvedRoute
    key: str
    labels: dict[str, str]
    created_ns: int
    last_flush_ns: int | None = None
    immediate: bool = False
    notes: dict[tuple[str, str], Note] = field(default_factory=dict)

    def due_ns(self) -> int:
        if self.immediate:
            return 0
        if self.last_flush_ns is None:
            return self.created_ns + int(self.route.group_wait * NS)
        return self.last_flush_ns + int(self.route.group_interval * NS)

    def is_due(self, now: int) -> bool:
        return bool(self.notes) and now >= self.due_ns()


def worst_first(alerts: list[Alert]) -> list[Alert]:
    """Highest severity first, then furthest past its threshold (works for `>=` and `<` rules alike)."""

    def badness(a: Alert) -> tuple[int, float]:
        if a.value is None:
            return SEVERITY_RANK.get(a.severity, 0), 0.0
        distance = abs(a.value - a.threshold) if a.threshold is not None else abs(a.value)
        return SEVERITY_RANK.get(a.severity, 0), distance

    return sorted(alerts, key=badness, reverse=True)


class Grouper:
    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], Group] = {}

    def __iter__(self) -> Iterator[Group]:
        return iter(list(self._groups.values()))

    def get(self, key: tuple[str, str]) -> Group | None:
        return self._groups.get(key)

    def add(
        self,
        route: ResolvedRoute,
        receiver: str,
        alert: Alert,
        labels: dict[str, str],
        kind: str,
        now: int,
        *,
        immediate: bool = False,
        held: bool = False,
    ) -> Group:
        """Put one (alert, event) into its group. `held`: the alert is silenced / in maintenance right now."""
        key = route.group_key(labels) + ("" if receiver == route.receiver else f"->{receiver}")
        group = self._groups.get((receiver, key))
        if group is None:
            group_labels = {k: labels.get(k, "") for k in route.group_by}
            group = self._groups[(receiver, key)] = Group(receiver, route, key, group_labels, now)
        if kind == "resolved":
            if (alert.id, "firing") in group.notes and held:
                del group.notes[(alert.id, "firing")]
                return group  # fired and resolved while silenced or in maintenance: nothing to tell
            # An alert that fired and resolved before its group was sent is still reported, with its resolution:
            # that it fired is what matters (a child left on a bus for five minutes).
            for k in [k for k in group.notes if k[0] == alert.id and k[1] != "firing"]:
                del group.notes[k]
        if kind.startswith("reminder"):
            for k in [k for k in group.notes if k[0] == alert.id and k[1].startswith("reminder")]:
                del group.notes[k]
        group.notes[(alert.id, kind)] = Note(alert, kind, now)
        group.immediate = group.immediate or immediate
        return group

    def forget_idle(self, now: int) -> None:
        for gkey, group in list(self._groups.items()):
            if not group.notes and group.last_flush_ns is not None:
                idle = max(group.route.group_interval, group.route.repeat_interval, 3600.0)
                if now - group.last_flush_ns > int(idle * NS):
                    del self._groups[gkey]
