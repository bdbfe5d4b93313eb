"""The durable outbox: what is owed to each receiver survives a crash.

    enqueue  — in ONE transaction: the notification-log rows (unique `receiver|alert|event`: the dedup stage) and the
               message itself (state `owed`), before any attempt;
    owed     — a receiver's owed messages, oldest first (what its worker sends next; also what a restart resumes);
    sent     — only after the receiver accepted the message;
    failed / expired — a permanent failure, or a message that no longer matters (its alerts resolved/acknowledged).

The price of at-least-once: a crash after the receiver accepted a message and before `sent` was recorded sends it
again after the restart (Alertmanager makes the same trade).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from rules.notify.base import NotifyMessage
from rules.store import AlertRow, NotificationRow, OutboxRow

OWED, SENT, FAILED, EXPIRED = "owed", "sent", "failed", "expired"
# notification-log outcomes that mean "delivered or still on its way" (a resolve may follow them)
LIVE_OUTCOMES = ("queued", "retrying", "sent")


_last_id_ns = 0


def new_message_id() -> str:
    """32 hex characters that sort in creation order (wall-clock ns, strictly increasing in this process, then
    random): messages created in the same instant of a (fake) clock still resume oldest first."""
    global _last_id_ns
    _last_id_ns = max(time.time_ns(), _last_id_ns + 1)
    return f"{_last_id_ns:016x}{secrets.token_hex(8)}"


@dataclass(slots=True)
class OwedMessage:
    id: str
    receiver: str
    kind: str
    group_key: str
    alert_ids: list[str]
    severity: str
    title: str
    body: str
    payload: dict[str, Any]
    attempts: int
    error: str | None
    fallback: str | None
    fallback_after_s: float | None
    escalated: bool
    first_failure_ns: int | None
    next_attempt_ns: int
    created_ns: int

    @property
    def base_kind(self) -> str:
        return self.kind.split("-", 1)[0]

    def message(self) -> NotifyMessage:
        return NotifyMessage(
            receiver=self.receiver,
            title=self.title,
            body=self.body,
            severity=self.severity,
            kind=self.base_kind,
            alert_ids=list(self.alert_ids),
            group_key=self.group_key,
            message_id=self.id,
            payload=dict(self.payload),
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One (alert, event) a flushed group wants to tell a receiver."""

    alert_id: str
    kind: str  # firing | resolved | reminder-N | escalation-N


def _owed(row: OutboxRow) -> OwedMessage:
    return OwedMessage(
        row.id,
        row.receiver,
        row.kind,
        row.group_key,
        list(row.alert_ids or []),
        row.severity,
        row.title,
        row.body,
        dict(row.payload or {}),
        row.attempts,
        row.error,
        row.fallback,
        row.fallback_after_s,
        bool(row.escalated),
        row.first_failure_ns,
        row.next_attempt_ns,
        row.created_ns,
    )


# Builds the message for the candidates that passed dedup (None: nothing to send after all).
Build = Callable[[list[Candidate]], NotifyMessage | None]


PROCESS_OWNER = secrets.token_hex(16)  # this process, as the holder of outbox leases


class Outbox:
    """Synchronous (call from a thread in async code), on the alert store's database.

    Several processes may share one database (engines partitioned by device): a message is sent under a lease
    (`lease`), so only one of them works on it; a lease of a process that died runs out (after the attempt's
    timeout, or at the end of its backoff) and another process takes the message over."""

    def __init__(self, engine: Engine, owner: str = PROCESS_OWNER) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.owner = owner

    def _free(self, now_wall: int) -> Any:
        return or_(
            OutboxRow.lease_until_ns.is_(None), OutboxRow.lease_until_ns < now_wall, OutboxRow.lease_owner == self.owner
        )

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # ---- the dedup stage and the write-ahead record -------------------------------------------------------

    def enqueue(
        self,
        receiver: str,
        group_key: str,
        candidates: Sequence[Candidate],
        build: Build,
        now_ns: int,
        *,
        fallback: str | None = None,
        fallback_after_s: float | None = None,
    ) -> OwedMessage | None:
        """Claim the candidates not told before and record the message as owed, atomically. None: nothing new.

        A resolve is claimed only when its firing went (or is going) to this receiver: never a resolve without
        its firing. Two processes racing on one key: one wins (unique dedup key), the other retries and skips it.
        """
        for _ in range(3):
            try:
                return self._enqueue(receiver, group_key, candidates, build, now_ns, fallback, fallback_after_s)
            except IntegrityError:
                continue  # another process claimed one of the keys in between: look again
        return None

    def _enqueue(
        self,
        receiver: str,
        group_key: str,
        candidates: Sequence[Candidate],
        build: Build,
        now_ns: int,
        fallback: str | None,
        fallback_after_s: float | None,
    ) -> OwedMessage | None:
        keys = {f"{receiver}|{c.alert_id}|{c.kind}": c for c in candidates}
        with self._tx() as s:
            taken = set(s.scalars(select(NotificationRow.dedup_key).where(NotificationRow.dedup_key.in_(list(keys)))))
            resolved_ids = [c.alert_id for c in candidates if c.kind == "resolved"]
            fired = set()
            if resolved_ids:
                fired = set(
                    s.scalars(
                        select(NotificationRow.alert_id).where(
                            NotificationRow.receiver == receiver,
                            NotificationRow.alert_id.in_(resolved_ids),
                            NotificationRow.kind == "firing",
                            NotificationRow.outcome.in_(LIVE_OUTCOMES),
                        )
                    )
                )
            fired |= {c.alert_id for k, c in keys.items() if c.kind == "firing" and k not in taken}  # this message
            claimed = [c for k, c in keys.items() if k not in taken and (c.kind != "resolved" or c.alert_id in fired)]
            if not claimed:
                return None
            message = build(claimed)
            if message is None:
                return None
            for c in claimed:
                s.add(
                    NotificationRow(
                        dedup_key=f"{receiver}|{c.alert_id}|{c.kind}",
                        message_id=message.message_id,
                        alert_id=c.alert_id,
                        receiver=receiver,
                        group_key=group_key,
                        kind=c.kind,
                        outcome="queued",
                        attempts=0,
                        error=None,
                        created_ns=now_ns,
                        updated_ns=now_ns,
                    )
                )
            row = OutboxRow(
                id=message.message_id,
                receiver=receiver,
                kind=message.kind,
                group_key=group_key,
                alert_ids=list(message.alert_ids),
                severity=message.severity,
                title=message.title,
                body=message.body,
                payload=message.payload,
                state=OWED,
                attempts=0,
                error=None,
                fallback=fallback,
                fallback_after_s=fallback_after_s,
                escalated=0,
                first_failure_ns=None,
                next_attempt_ns=now_ns,
                created_ns=now_ns,
                updated_ns=now_ns,
            )
            s.add(row)
            s.flush()
            return _owed(row)

    # ---- what the workers read and write ------------------------------------------------------------------

    def owed(self, receiver: str, limit: int = 100) -> list[OwedMessage]:
        """A receiver's owed messages, oldest first (not those another live process is sending)."""
        stmt = (
            select(OutboxRow)
            .where(OutboxRow.state == OWED, OutboxRow.receiver == receiver, self._free(time.time_ns()))
            .order_by(OutboxRow.created_ns, OutboxRow.id)
            .limit(limit)
        )
        with self._tx() as s:
            return [_owed(r) for r in s.scalars(stmt)]

    def lease(self, message_id: str, seconds: float) -> bool:
        """Take (or extend) the right to send this owed message for `seconds`; False: another process has it, or it
        is no longer owed."""
        now = time.time_ns()
        with self._tx() as s:
            result = s.execute(
                update(OutboxRow)
                .where(OutboxRow.id == message_id, OutboxRow.state == OWED, self._free(now))
                .values(lease_owner=self.owner, lease_until_ns=now + int(seconds * 1e9))
            )
            return bool(getattr(result, "rowcount", 0))

    def get(self, message_id: str) -> OwedMessage | None:
        with self._tx() as s:
            row = s.get(OutboxRow, message_id)
            return _owed(row) if row else None

    def state(self, message_id: str) -> str | None:
        with self._tx() as s:
            return s.scalar(select(OutboxRow.state).where(OutboxRow.id == message_id))

    def _finish(
        self, s: Session, message_id: str, state: str, outcome: str, attempts: int, error: str | None, now_ns: int
    ) -> None:
        s.execute(
            update(OutboxRow)
            .where(OutboxRow.id == message_id)
            .values(state=state, attempts=attempts, error=error, updated_ns=now_ns)
        )
        s.execute(
            update(NotificationRow)
            .where(NotificationRow.message_id == message_id)
            .values(outcome=outcome, attempts=attempts, error=error, updated_ns=now_ns)
        )

    def mark_sent(self, message_id: str, attempts: int, now_ns: int) -> None:
        """The receiver accepted the message (only then)."""
        with self._tx() as s:
            self._finish(s, message_id, SENT, "sent", attempts, None, now_ns)

    def mark_failed(self, message_id: str, attempts: int, error: str, now_ns: int) -> None:
        with self._tx() as s:
            self._finish(s, message_id, FAILED, "failed", attempts, error, now_ns)

    def mark_expired(self, message_id: str, attempts: int, reason: str, now_ns: int) -> None:
        with self._tx() as s:
            self._finish(s, message_id, EXPIRED, "expired", attempts, reason, now_ns)

    def note_retry(
        self, message_id: str, attempts: int, error: str, first_failure_ns: int, next_attempt_ns: int, now_ns: int
    ) -> None:
        """A retryable failure: the message stays owed, with when to try next (a restart keeps the backoff)."""
        with self._tx() as s:
            s.execute(
                update(OutboxRow)
                .where(OutboxRow.id == message_id)
                .values(
                    attempts=attempts,
                    error=error,
                    first_failure_ns=first_failure_ns,
                    next_attempt_ns=next_attempt_ns,
                    updated_ns=now_ns,
                    # held through the backoff; a process that dies meanwhile frees it when the wait is over
                    lease_until_ns=time.time_ns() + (next_attempt_ns - now_ns),
                )
            )
            s.execute(
                update(NotificationRow)
                .where(NotificationRow.message_id == message_id)
                .values(outcome="retrying", attempts=attempts, error=error, updated_ns=now_ns)
            )

    def mark_escalated(self, message_id: str, now_ns: int) -> None:
        with self._tx() as s:
            s.execute(update(OutboxRow).where(OutboxRow.id == message_id).values(escalated=1, updated_ns=now_ns))

    # ---- what the relevance check needs -------------------------------------------------------------------

    def alert_states(self, alert_ids: Sequence[str]) -> dict[str, tuple[str, bool]]:
        """{alert id: (state, acknowledged)} in one query."""
        with self._tx() as s:
            rows = s.execute(
                select(AlertRow.id, AlertRow.state, AlertRow.ack_ns).where(AlertRow.id.in_(list(alert_ids)))
            )
            return {r[0]: (r[1], r[2] is not None) for r in rows}

    def firing_sent(self, receiver: str, alert_ids: Sequence[str]) -> set[str]:
        """The alerts among `alert_ids` whose firing this receiver accepted."""
        with self._tx() as s:
            return set(
                s.scalars(
                    select(NotificationRow.alert_id).where(
                        NotificationRow.receiver == receiver,
                        NotificationRow.alert_id.in_(list(alert_ids)),
                        NotificationRow.kind == "firing",
                        NotificationRow.outcome == "sent",
                    )
                )
            )

    def resolves_owed_after_restart(self, since_ns: int) -> list[str]:
        """Alerts resolved since `since_ns` whose firing a receiver got (or is owed) but whose resolve was never
        recorded: the resolve was still in a group's memory at a crash. (Bounded by `since_ns`: the notification
        log keeps all history.)"""
        told = aliased(NotificationRow)
        stmt = (
            select(NotificationRow.alert_id)
            .distinct()
            .join(AlertRow, AlertRow.id == NotificationRow.alert_id)
            .where(
                NotificationRow.kind == "firing",
                NotificationRow.outcome.in_(LIVE_OUTCOMES),
                AlertRow.state == "resolved",
                AlertRow.resolved_ns >= since_ns,
                ~exists().where(
                    told.receiver == NotificationRow.receiver,
                    told.alert_id == NotificationRow.alert_id,
                    told.kind == "resolved",
                ),
            )
        )
        with self._tx() as s:
            return sorted(s.scalars(stmt))
