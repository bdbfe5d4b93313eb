"""Recent raw messages per device (the newest 20, as the collectors saw them) and a device's diagnostics."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import insert, select, text

from core.db import utcnow
from core.model import RecentMessage
from gateway.registry.database import RegistryDatabase
from gateway.registry.devices import DeviceStore
from gateway.registry.models import DeviceRecentMessage
from gateway.registry.schemas import DiagnosticsOut, RecentMessageOut

RECENT_MESSAGES_KEPT = 20
RECENT_PAYLOAD_BYTES = 2048


def _payload_text(payload: bytes | str) -> str:
    if isinstance(payload, str) and len(payload) <= RECENT_PAYLOAD_BYTES // 4:  # fits whatever its characters
        return payload
    raw = payload.encode() if isinstance(payload, str) else payload
    if len(raw) > RECENT_PAYLOAD_BYTES:
        raw = raw[:RECENT_PAYLOAD_BYTES]
        return raw.decode("utf-8", errors="ignore")  # may have cut a multi-byte character in half
    return raw.decode("utf-8", errors="replace")


_COLUMNS = ("device_id", "received_at", "topic", "payload", "accepted", "reason")
_SQLITE_INSERT = (
    f"INSERT INTO device_recent_messages ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"
)
# A device's rows older than its 20th newest (newest = latest received_at, then highest id, as `of` reads them);
# the index on (device_id, received_at) finds them without ranking the whole table.
_TRIM = (
    "DELETE FROM device_recent_messages WHERE device_id = {p} AND id IN ("
    "SELECT id FROM device_recent_messages WHERE device_id = {p} ORDER BY received_at DESC, id DESC "
    "LIMIT {unlimited} OFFSET " + str(RECENT_MESSAGES_KEPT) + ")"
)
_SQLITE_TRIM = _TRIM.format(p="?1", unlimited="-1")
_PORTABLE_TRIM = text(_TRIM.format(p=":device_id", unlimited="ALL"))


def _sqlite_datetime(value: datetime) -> str:
    """What `UtcDateTime` on SQLite stores: the UTC time without offset, always with microseconds."""
    v = value.astimezone(UTC)
    return f"{v:%Y-%m-%d %H:%M:%S}.{v.microsecond:06d}"


@lru_cache(maxsize=64)
def _sqlite_second(second: int) -> str:
    return f"{datetime.fromtimestamp(second, tz=UTC):%Y-%m-%d %H:%M:%S}"


def _sqlite_received_at(time_ns: int | None) -> str:
    """`_sqlite_datetime(_ns_to_datetime(time_ns))` without a datetime per message (a flush's messages share a
    few seconds): the microsecond rounded to nearest from the integer nanoseconds."""
    if time_ns is None:
        return _sqlite_datetime(utcnow())
    second, micro = divmod((time_ns + 500) // 1000, 1_000_000)
    return f"{_sqlite_second(second)}.{micro:06d}"


def _ns_to_datetime(time_ns: int | None) -> datetime:
    if time_ns is None:
        return utcnow()
    return datetime.fromtimestamp(time_ns / 1e9, tz=UTC)


class RecentMessages:
    def __init__(self, db: RegistryDatabase, devices: DeviceStore) -> None:
        self.db = db
        self.devices = devices

    def record(self, batch: Mapping[str, Sequence[RecentMessage]]) -> None:
        """Append each device's messages and keep only its newest 20: one insert of every row, then one trim per
        device, both as a single `executemany` (every 5 s for up to 20,000 rows during a drain)."""
        rows: list[tuple[Any, ...]] = []
        for device_id, messages in batch.items():
            device = device_id[:200]
            for message in list(messages)[-RECENT_MESSAGES_KEPT:]:
                rows.append(
                    (
                        device,
                        message.received_ns,
                        message.topic[:1024],
                        _payload_text(message.payload),
                        message.accepted,
                        (message.reason or None) and str(message.reason)[:200],
                    )
                )
        if not rows:
            return
        devices = [(d,) for d in sorted({r[0] for r in rows})]  # one lock order for concurrent flushes
        with self.db.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # Straight to the driver (as rules/store.py does): SQLAlchemy's per-row parameter processing cost
                # more than the write. The stored formats are the ones its types write (UtcDateTime: naive UTC
                # "YYYY-MM-DD HH:MM:SS.ffffff", Boolean: 0/1), so reads through the ORM are unchanged.
                cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                try:
                    cursor.executemany(_SQLITE_INSERT, [(r[0], _sqlite_received_at(r[1]), *r[2:]) for r in rows])
                    cursor.executemany(_SQLITE_TRIM, devices)
                finally:
                    cursor.close()
            else:
                params = [dict(zip(_COLUMNS, (r[0], _ns_to_datetime(r[1]), *r[2:]), strict=True)) for r in rows]
                conn.execute(insert(DeviceRecentMessage), params)
                conn.execute(_PORTABLE_TRIM, [{"device_id": d} for (d,) in devices])

    def of(self, device_id: str, limit: int = RECENT_MESSAGES_KEPT) -> list[RecentMessageOut]:
        """The device's recent messages, newest first."""
        table = DeviceRecentMessage
        with self.db.sessions() as session:
            rows = session.scalars(
                select(table)
                .where(table.device_id == device_id)
                .order_by(table.received_at.desc(), table.id.desc())
                .limit(limit)
            ).all()
            return [RecentMessageOut.model_validate(r) for r in rows]

    def diagnostics(self, device_id: str) -> DiagnosticsOut:
        device = self.devices.get(device_id)
        messages = self.of(device_id)
        last_accepted = next((m for m in messages if m.accepted), None)
        last_reading: Any = None
        if last_accepted is not None:
            try:
                last_reading = json.loads(last_accepted.payload)
            except ValueError:
                last_reading = last_accepted.payload
        return DiagnosticsOut(
            device=device,
            last_seen=messages[0].received_at if messages else None,
            last_reading_at=last_accepted.received_at if last_accepted else None,
            last_reading=last_reading,
            recent_messages=messages,
        )
