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
        sources = [self.labels_of(a) for a in self.firing_alerts() if a.state == "firing"]
        if self.router.inhibited(labels, sources):
            return "inhibited"
        return None

    @staticmethod
    def quiet(route: ResolvedRoute, alert: Alert, now: int) -> bool:
        """Quiet hours of the route hold this alert now (critical alerts ignore them)."""
        if route.quiet_hours is None or alert.severity == "critical":
            return False
        return in_schedule(route.quiet_hours.schedule(), now)
