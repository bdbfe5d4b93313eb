"""The silence / maintenance / inhibit / quiet-hours stage: whether a notification is held back now.

Held notifications stay in their group and go out when the reason ends (or are dropped if the alert resolves
first); quiet hours (Asia/Bangkok) hold everything but critical alerts."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from core.model import DeviceInfo
from rules.conditions import in_schedule
from rules.matchers import matches_all
from rules.notify.routing import ResolvedRoute, Router
from rules.store import Alert, Silence

LabelsOf = Callable[[Alert], dict[str, str]]


# The labels an alert takes from its own fields (rules.notify.pipeline.alert_labels): those can be compared
# without building the alert's label map.
_FIELD_LABELS = frozenset({"rule", "device_id", "city", "district", "feed", "severity"})


def _may_agree(source: Alert, target: dict[str, str], equal: Iterable[str]) -> bool:
    return all(getattr(source, k) == target.get(k) for k in equal if k in _FIELD_LABELS)


class Suppressor:
    def __init__(
        self,
        router: Router,
        labels_of: LabelsOf,
        device_of: Callable[[str], DeviceInfo | None],
        firing_alerts: Callable[[], Iterable[Alert]],
    ) -> None:
        self.router = router
        self.labels_of = labels_of
        self.device_of = device_of
        self.firing_alerts = firing_alerts
        self.silences: list[Silence] = []

    def held_by(self, alert: Alert, now: int) -> str | None:
        """Why a notification for `alert` is held back now (silence, maintenance, inhibited) or None."""
        labels = self.labels_of(alert)
        for silence in self.silences:
            if silence.active(now) and matches_all(silence.matchers, labels):
                return f"silence:{silence.id}"
        device = self.device_of(alert.device_id)
        if device is not None and device.maintenance_until_ns is not None and device.maintenance_until_ns > now:
            return "maintenance"
        # Only the inhibit rules whose target is this alert, only the firing alerts that can agree with it on
        # their `equal` labels: a storm's thousand firing alerts are not each turned into labels per
        # notification (that was quadratic: 1,000 gauges overbank, 1,000 x 1,000 label maps).
        rules = [r for r in self.router.config.inhibit_rules
                 if all(labels.get(k) == v for k, v in r.target_match.items())]
        if not rules:
            return None
        sources = [self.labels_of(a) for a in self.firing_alerts()
                   if a.state == "firing" and any(_may_agree(a, labels, r.equal) for r in rules)]
        if self.router.inhibited(labels, sources):
            return "inhibited"
        return None

    @staticmethod
    def quiet(route: ResolvedRoute, alert: Alert, now: int) -> bool:
        """Quiet hours of the route hold this alert now (critical alerts ignore them)."""
        if route.quiet_hours is None or alert.severity == "critical":
            return False
        return in_schedule(route.quiet_hours.schedule(), now)
