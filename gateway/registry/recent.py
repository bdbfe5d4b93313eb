"""Recent raw messages per device (the newest 20, as the collectors saw them) and a device's diagnostics."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select

from core.db import utcnow
from core.model import RecentMessage
from gateway.registry.database import RegistryDatabase, chunks
from gateway.registry.devices import DeviceStore
from gateway.registry.models import DeviceRecentMessage
from gateway.registry.schemas import DiagnosticsOut, RecentMessageOut

RECENT_MESSAGES_KEPT = 20
RECENT_PAYLOAD_BYTES = 2048


def _payload_text(payload: bytes | str) -> str:
    raw = payload.encode() if isinstance(payload, str) else payload
    if len(raw) > RECENT_PAYLOAD_BYTES:
        raw = raw[:RECENT_PAYLOAD_BYTES]
        return raw.decode("utf-8", errors="ignore")  # may have cut a multi-byte character in half
    return raw.decode("utf-8", errors="replace")


def _ns_to_datetime(time_ns: int | None) -> datetime:
    if time_ns is None:
        return utcnow()
    return datetime.fromtimestamp(time_ns / 1e9, tz=UTC)


class RecentMessages:
    def __init__(self, db: RegistryDatabase, devices: DeviceStore) -> None:
        self.db = db
        self.devices = devices

    def record(self, batch: Mapping[str, Sequence[RecentMessage]]) -> None:
        """Append each device's messages and keep only its newest 20 (one insert + one trim per 500 devices)."""
        rows: list[dict[str, Any]] = []
        for device_id, messages in batch.items():
            for message in list(messages)[-RECENT_MESSAGES_KEPT:]:
                rows.append(
                    {
                        "device_id": device_id[:200],
                        "received_at": _ns_to_datetime(message.received_ns),
                        "topic": message.topic[:1024],
                        "payload": _payload_text(message.payload),
                        "accepted": message.accepted,
                        "reason": (message.reason or None) and str(message.reason)[:200],
                    }
                )
        if not rows:
            return
        table = DeviceRecentMessage
        with self.db.transaction() as session:
            # Core insert (not the ORM's bulk path): this runs every few seconds with up to 20 rows per device
            session.execute(insert(DeviceRecentMessage.__table__), rows)  # type: ignore[arg-type]
            device_ids = sorted({r["device_id"] for r in rows})
            for chunk in chunks(device_ids):
                rank = (
                    func.row_number()
                    .over(partition_by=table.device_id, order_by=(table.received_at.desc(), table.id.desc()))
                    .label("rank")
                )
                ranked = select(table.id, rank).where(table.device_id.in_(chunk)).subquery()
                stale = select(ranked.c.id).where(ranked.c.rank > RECENT_MESSAGES_KEPT)
                session.execute(delete(table).where(table.id.in_(stale)).execution_options(synchronize_session=False))

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
