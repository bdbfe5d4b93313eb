"""The audit log: who changed what, before and after, secrets redacted. Append-only.

A change to a registry table writes its entry with `audit_in(session, ...)` in the change's own transaction;
`AuditLog.record` is for changes made elsewhere (the broker's accounts, staff users, alerts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import utcnow
from gateway.registry.database import RegistryDatabase, equal_to
from gateway.registry.models import AuditEntry
from gateway.registry.schemas import AuditOut, Page
from gateway.secrets import redact


def audit_in(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """Add an audit entry to the caller's transaction: it commits (or not) with the change it describes."""
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=actor,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            before=redact(before),
            after=redact(after),
        )
    )


class AuditLog:
    def __init__(self, db: RegistryDatabase) -> None:
        self.db = db

    def record(
        self,
        *,
        actor: str,
        action: str,
        entity_type: str,
        entity_id: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """For changes made outside the registry tables (e.g. the broker's collector account)."""
        with self.db.transaction() as session:
            audit_in(
                session,
                actor=actor,
                action=action,
                entity_type=entity_type,
                entity_id=entity_id,
                before=before,
                after=after,
            )

    def find(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[AuditOut]:
        """Newest first; `since` inclusive, `until` exclusive."""
        conditions = equal_to(AuditEntry, entity_type=entity_type, entity_id=entity_id, actor=actor, action=action)
        if since is not None:
            conditions.append(AuditEntry.at >= since)
        if until is not None:
            conditions.append(AuditEntry.at < until)
        with self.db.sessions() as session:
            total = session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions)) or 0
            rows = session.scalars(
                select(AuditEntry)
                .where(*conditions)
                .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return Page[AuditOut](
                total=total, limit=limit, offset=offset, items=[AuditOut.model_validate(r) for r in rows]
            )
