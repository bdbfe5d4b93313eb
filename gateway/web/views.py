"""What the console shows, queried with the viewer's city scope applied in every query."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core.db import utcnow
from gateway.registry.models import Device, DeviceProfile, DeviceRecentMessage
from gateway.web.users import StaffPrincipal

DEFAULT_HEARTBEAT_S = 900  # a device with no heartbeat set (nor in its profile) is late after 15 minutes
LATE_FACTOR = 1.5  # up to 1.5 heartbeats: reporting; up to 3: late; beyond: silent
SILENT_FACTOR = 3.0
PAGE_SIZE = 200
BATTERY_KEYS = ("battery_pct", "battery", "batt", "bat", "battery_level")


@dataclass(slots=True)
class DeviceRow:
    device_id: str
    name: str
    city: str
    district: str
    feed: str
    status: str
    health: str
    last_seen: datetime | None
    battery: float | None


@dataclass(slots=True)
class Filters:
    city: str | None = None
    district: str | None = None
    feed: str | None = None
    status: str | None = None


@dataclass(slots=True)
class QuarantineEntry:
    received_ns: int
    topic: str
    reason: str
    detail: str
    payload: str


def _battery(payload: str) -> float | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    candidates: list[Any] = [data] if isinstance(data, dict) else []
    if isinstance(data, dict):
        candidates += [v for v in data.values() if isinstance(v, dict)]  # {"fields": {...}}, TTN's decoded_payload
    for obj in candidates:
        for key in BATTERY_KEYS:
            value = obj.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 100:
                return float(value)
    return None


def health_of(
    status: str, maintenance_until: datetime | None, heartbeat_s: int | None, messages: list[DeviceRecentMessage],
    now: datetime,
) -> str:
    """reporting / late / silent / maintenance / quarantining / retired, from the newest raw messages."""
    if status == "retired":
        return "retired"
    if maintenance_until is not None and maintenance_until > now:
        return "maintenance"
    if not messages:
        return "silent"
    if not messages[0].accepted:
        return "quarantining"  # what it sends now is refused: the field engineer must look, whatever its age
    age = (now - messages[0].received_at).total_seconds()
    beat = heartbeat_s or DEFAULT_HEARTBEAT_S
    if age <= beat * LATE_FACTOR:
        return "reporting"
    if age <= beat * SILENT_FACTOR:
        return "late"
    return "silent"


class ConsoleQueries:
    def __init__(self, engine: Engine, quarantine_path: Path | None) -> None:
        self.engine = engine
        self.quarantine_path = quarantine_path

    @staticmethod
    def _scope(who: StaffPrincipal) -> list[Any]:
        return [Device.city.in_(who.cities)] if who.cities else []

    def cities(self, who: StaffPrincipal) -> list[str]:
        with Session(self.engine) as session:
            known = set(session.scalars(select(Device.city).distinct()))
        return sorted(set(who.cities) if who.cities else known)

    def cities_of(self, device_ids: list[str]) -> dict[str, str]:
        """{device id: its city} of those registered (to keep a city-scoped import inside its cities)."""
        found: dict[str, str] = {}
        with Session(self.engine) as session:
            for start in range(0, len(device_ids), 500):
                chunk = device_ids[start : start + 500]
                query = select(Device.device_id, Device.city).where(Device.device_id.in_(chunk))
                found.update((device_id, city) for device_id, city in session.execute(query))
        return found

    def devices(self, who: StaffPrincipal, filters: Filters) -> tuple[int, list[DeviceRow]]:
        conditions = self._scope(who)
        for column, value in (
            (Device.city, filters.city), (Device.district, filters.district), (Device.feed, filters.feed),
            (Device.status, filters.status),
        ):
            if value:
                conditions.append(column == value)
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(Device).where(*conditions)) or 0
            rows = session.execute(
                select(Device, DeviceProfile.heartbeat_s)
                .outerjoin(DeviceProfile, DeviceProfile.name == Device.profile)
                .where(*conditions)
                .order_by(Device.city, Device.device_id)
                .limit(PAGE_SIZE)
            ).all()
            messages = self._recent(session, [d.device_id for d, _ in rows])
        now = utcnow()
        out = []
        for device, profile_beat in rows:
            recent = messages.get(device.device_id, [])
            accepted = next((m for m in recent if m.accepted), None)
            out.append(
                DeviceRow(
                    device.device_id, device.name, device.city, device.district, device.feed, device.status,
                    health_of(device.status, device.maintenance_until, device.heartbeat_s or profile_beat, recent, now),
                    recent[0].received_at if recent else None,
                    _battery(accepted.payload) if accepted else None,
                )
            )
        return total, out

    @staticmethod
    def _recent(session: Session, device_ids: list[str]) -> dict[str, list[DeviceRecentMessage]]:
        by_device: dict[str, list[DeviceRecentMessage]] = defaultdict(list)
        for start in range(0, len(device_ids), 500):
            chunk = device_ids[start : start + 500]
            for message in session.scalars(
                select(DeviceRecentMessage)
                .where(DeviceRecentMessage.device_id.in_(chunk))
                .order_by(DeviceRecentMessage.received_at.desc(), DeviceRecentMessage.id.desc())
            ):
                by_device[message.device_id].append(message)
        return by_device

    def device(self, who: StaffPrincipal, device_id: str) -> tuple[Device, DeviceRow, list[Any]] | None:
        """The device (None when unknown or outside the viewer's cities: the same answer, nothing leaks)."""
        with Session(self.engine) as session:
            found = session.execute(
                select(Device, DeviceProfile.heartbeat_s)
                .outerjoin(DeviceProfile, DeviceProfile.name == Device.profile)
                .where(Device.device_id == device_id, *self._scope(who))
            ).one_or_none()
            if found is None:
                return None
            device, profile_beat = found
            recent = self._recent(session, [device_id]).get(device_id, [])
            session.expunge_all()
        accepted = next((m for m in recent if m.accepted), None)
        row = DeviceRow(
            device.device_id, device.name, device.city, device.district, device.feed, device.status,
            health_of(device.status, device.maintenance_until, device.heartbeat_s or profile_beat, recent, utcnow()),
            recent[0].received_at if recent else None,
            _battery(accepted.payload) if accepted else None,
        )
        return device, row, recent[:20]

    def quarantine(self, device_id: str, limit: int = 20) -> list[QuarantineEntry]:
        """The collectors' quarantine (their SQLite file), opened read-only; empty when there is none yet."""
        path = self.quarantine_path
        if path is None or not path.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as db:
            try:
                rows = db.execute(
                    "SELECT received_ns, topic, reason, detail, payload FROM quarantine WHERE device_id = ? "
                    "ORDER BY id DESC LIMIT ?",
                    (device_id, limit),
                ).fetchall()
            except sqlite3.DatabaseError:
                return []
        return [
            QuarantineEntry(int(r[0]), str(r[1]), str(r[2]), str(r[3]), bytes(r[4])[:512].decode("utf-8", "replace"))
            for r in rows
        ]


@dataclass(slots=True)
class AlertGroup:
    key: str
    title: str
    alerts: list[Any] = field(default_factory=list)


GroupOf = Callable[[Any], tuple[str, str]]  # alert -> (group key, title)


def default_group_of(alert: Any) -> tuple[str, str]:
    """The notifications' default grouping (rules.notify.routing: group_by rule, city)."""
    return f"rule={alert.rule},city={alert.city}", f"{alert.rule} · {alert.city}"


def routing_group_of(router: Any) -> GroupOf:
    """Group as the configured routing does: the first route an alert's labels match, and its `group_by`."""
    from rules.notify.pipeline import alert_labels

    def group_of(alert: Any) -> tuple[str, str]:
        labels = alert_labels(alert)
        route = router.match(labels)[0]
        title = " · ".join(labels.get(k, "") for k in route.group_by) or route.receiver
        return route.group_key(labels), title

    return group_of


__all__ = [
    "AlertGroup", "ConsoleQueries", "DeviceRow", "Filters", "GroupOf", "QuarantineEntry", "default_group_of",
    "health_of", "routing_group_of",
]
