"""The alert lifecycle: pending -> firing -> resolved, acknowledgement at any point.

Each state change is written to the store first (the database guarantees one open alert per (rule, device)),
then counted (`nakhon_alerts_state_changes_total{rule,state}`), turned into a `collectors.model.Point` for
the `alerts` measurement (handed to the injected async sink callback), and handed to the notification pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from collectors.model import DeviceInfo, Point
from rules.metrics import ALERT_POINT_ERRORS, ALERT_STATE_CHANGES
from rules.store import Alert, AlertStore

log = logging.getLogger(__name__)

EmitPoint = Callable[[Point], Awaitable[None]]
ALERTS_MEASUREMENT = "alerts"


class AlertSubscriber(Protocol):
    async def submit(self, alert: Alert, device: DeviceInfo | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class AlertChange:
    alert: Alert
    previous: str | None  # None when the alert was just opened
    t_ns: int

    @property
    def state(self) -> str:
        return self.alert.state


def alert_point(alert: Alert, t_ns: int) -> Point:
    """The `alerts` point of one state change (tags rule, device_id, city, district, feed, severity)."""
    value = alert.value if alert.value is not None else 0.0
    return Point(
        ALERTS_MEASUREMENT,
        {
            "rule": alert.rule,
            "device_id": alert.device_id,
            "city": alert.city,
            "district": alert.district,
            "feed": alert.feed,
            "severity": alert.severity,
        },
        {
            "state": alert.state,
            "value": float(value),
            "message_th": alert.message_th,
            "message_en": alert.message_en,
            "alert_id": alert.id,
        },
        t_ns,
    )


class AlertLifecycle:
    def __init__(
        self,
        store: AlertStore,
        emit_point: EmitPoint | None = None,
        pipeline: AlertSubscriber | None = None,
    ) -> None:
        self.store = store
        self.emit_point = emit_point
        self.pipeline = pipeline

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def publish(self, change: AlertChange, device: DeviceInfo | None) -> None:
        ALERT_STATE_CHANGES.labels(change.alert.rule, change.state).inc()
        if self.emit_point is not None:
            try:
                await self.emit_point(alert_point(change.alert, change.t_ns))
            except Exception:
                ALERT_POINT_ERRORS.inc()
                log.exception("alert point for %s was not taken by the sink", change.alert.id)
        if self.pipeline is not None:
            await self.pipeline.submit(change.alert, device)

    async def open(
        self,
        *,
        rule: str,
        severity: str,
        device: DeviceInfo,
        t_ns: int,
        firing: bool,
        value: float | None,
        threshold: float | None,
        message_th: str,
        message_en: str,
        labels: dict[str, str],
    ) -> tuple[Alert, list[AlertChange]]:
        """Open the alert (pending, or firing at once). If one is already open (another evaluator), adopt it."""
        alert, created = await self._db(
            self.store.open_alert,
            rule=rule,
            device_id=device.device_id,
            city=device.city,
            district=device.district,
            feed=device.feed,
            severity=severity,
            state="firing" if firing else "pending",
            t_ns=t_ns,
            value=value,
            threshold=threshold,
            message_th=message_th,
            message_en=message_en,
            labels=labels,
        )
        if not created:
            return alert, []
        change = AlertChange(alert, None, t_ns)
        await self.publish(change, device)
        return alert, [change]

    async def fire(
        self,
        alert: Alert,
        device: DeviceInfo | None,
        t_ns: int,
        value: float | None = None,
        threshold: float | None = None,
        message_th: str | None = None,
        message_en: str | None = None,
    ) -> Alert | None:
        updated = await self._db(self.store.fire, alert.id, t_ns, value, threshold, message_th, message_en)
        if updated is None:
            return await self._db(self.store.get, alert.id)
        await self.publish(AlertChange(updated, "pending", t_ns), device)
        return updated

    async def resolve(
        self, alert: Alert, device: DeviceInfo | None, t_ns: int, value: float | None = None
    ) -> Alert | None:
        updated = await self._db(self.store.resolve, alert.id, t_ns, value)
        if updated is None:
            return None
        await self.publish(AlertChange(updated, alert.state, t_ns), device)
        return updated

    async def ack(self, alert_id: str, by: str, comment: str, t_ns: int) -> Alert | None:
        """Acknowledge (who, when, comment): stops reminders and escalation."""
        return await self._db(self.store.ack, alert_id, by, comment, t_ns)

    async def note_flap(self, alert: Alert, t_ns: int) -> Alert | None:
        return await self._db(self.store.note_flap, alert.id, t_ns)
