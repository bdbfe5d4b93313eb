"""The alert lifecycle: pending -> firing -> resolved, acknowledgement at any point.

Each state change is written to the store first (the database guarantees one open alert per (rule, device)),
then counted (`nakhon_alerts_state_changes_total{rule,state}`), turned into a `core.model.Point` for
the `alerts` measurement (handed to the injected async sink callback), and handed to the notification pipeline.

Batches: between `begin()` and `commit()` the changes are only recorded (snapshots in memory); `commit()`
writes their net effect in one transaction (`AlertStore.apply_batch`) and only then publishes every change,
in order. Nothing is published about a change that was not committed. Outside a batch each call commits at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from core.model import DeviceInfo, Point
from rules.metrics import (
    ALERT_BATCH_BUSY,
    ALERT_BATCH_FAILURES,
    ALERT_CANDIDATES,
    ALERT_POINT_ERRORS,
    ALERT_STATE_CHANGES,
)
from rules.store import Alert, AlertCandidate, AlertStore, AlertWrite, StoreBusyError

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


def after_last_change(alert: Alert, t_ns: int) -> int:
    """The time of a new state change: never before the alert's last change. A backlog's readings carry older
    times than a change the tick made at wall time (a `for` that ran out while readings were still queued); a
    resolution at such a reading's time would come *before* the firing in the `alerts` measurement, whose last
    point must be the alert's state."""
    return t_ns if t_ns > alert.updated_ns else alert.updated_ns + 1


def notifiable(change: AlertChange) -> bool:
    """Whether the notification pipeline has anything to do with the change: it notifies firing alerts and the
    resolution of alerts that fired. An alert opened pending, or resolved before it fired (the flapping of a
    storm: one such pair per reading), is in the store and the `alerts` measurement, never in a message."""
    if change.state == "pending":
        return False
    return not (change.state == "resolved" and change.alert.fired_ns is None)


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


@dataclass(slots=True)
class AlertBatch:
    """The changes recorded since `begin()`: net writes per alert id, and every change in order."""

    writes: dict[str, AlertWrite] = field(default_factory=dict)
    changes: list[tuple[AlertChange, DeviceInfo | None]] = field(default_factory=list)
    # the final candidate of each (rule, device) changed in the batch, None where withdrawn; and the counts of
    # what happened to candidates (rule, outcome), for `nakhon_alert_candidates_total` once committed
    candidates: dict[tuple[str, str], AlertCandidate | None] = field(default_factory=dict)
    candidate_outcomes: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.writes and not self.candidates

    def propose(self, candidate: AlertCandidate) -> None:
        self.candidates[candidate.key] = candidate
        self._count(candidate.rule, "proposed")

    def withdraw(self, rule: str, device_id: str, outcome: str) -> None:
        key = (rule, device_id)
        if self.candidates.get(key) is not None:
            del self.candidates[key]  # proposed in this batch: never written
        else:
            self.candidates[key] = None
        self._count(rule, outcome)

    def _count(self, rule: str, outcome: str) -> None:
        key = (rule, outcome)
        self.candidate_outcomes[key] = self.candidate_outcomes.get(key, 0) + 1

    def record(self, alert: Alert, previous: str | None, t_ns: int, device: DeviceInfo | None,
               publish: bool = True) -> None:
        write = self.writes.get(alert.id)
        if write is None:
            self.writes[alert.id] = AlertWrite(alert, insert=previous is None and publish, expect=previous)
        else:
            write.alert = alert  # opened or changed earlier in the batch: one write of the final snapshot
        if publish:
            self.changes.append((AlertChange(alert, previous, t_ns), device))


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    """How hard `commit()` tries before dropping a batch: a database that is briefly away (locked, restarted)
    delays the engine, and through its bounded queue the intake, instead of losing state changes."""

    attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0


class AlertLifecycle:
    def __init__(
        self,
        store: AlertStore,
        emit_point: EmitPoint | None = None,
        pipeline: AlertSubscriber | None = None,
        commit_policy: CommitPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        inline_writes: bool = True,
    ) -> None:
        self.inline_writes = inline_writes
        self.store = store
        self.emit_point = emit_point
        self.pipeline = pipeline
        self.commit_policy = commit_policy or CommitPolicy()
        self._sleep = sleep
        self._batch: AlertBatch | None = None
        self._counters: dict[tuple[str, str], Any] = {}

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ---- batches ------------------------------------------------------------------------------------------

    def begin(self) -> None:
        """Record changes until `commit()` (one transaction for all of them)."""
        if self._batch is None:
            self._batch = AlertBatch()

    def take(self) -> AlertBatch | None:
        """End the batch begun with `begin()` without writing it: the caller commits it with `commit_batch`
        (while the next batch is recorded)."""
        batch, self._batch = self._batch, None
        return batch

    async def commit(self) -> list[Alert]:
        """Write the batch in one transaction, then publish its changes in order. Returns the final snapshots of
        the alerts whose writes did not apply (taken by another evaluator, moved meanwhile, or the database
        stayed away for every attempt): nothing about those was published; the caller re-reads them."""
        return await self.commit_batch(self.take())

    async def commit_batch(self, batch: AlertBatch | None, *, in_thread: bool = False) -> list[Alert]:
        """`commit` of a batch ended by `take()`. `in_thread`: always write from a thread (the engine's loop
        commits one batch in the background while it evaluates the next, see `RulesEngine.run`)."""
        if batch is None:
            return []
        if batch.empty:  # nothing to write (candidates proposed and withdrawn within it): only counted
            self._count_candidates(batch)
            return []
        policy = self.commit_policy
        failed: set[str] | None = None
        writes = list(batch.writes.values())
        # in a thread: the statements are made here, on the loop, once for every attempt; the thread then
        # mostly runs SQLite, which holds no GIL
        prepared = self.store.prepare(writes, batch.candidates) if in_thread else None
        for attempt in range(1, policy.attempts + 1):
            try:
                if prepared is not None:
                    failed = await self._db(self.store.apply_batch, prepared)
                else:
                    failed = await self._apply(writes, batch.candidates)
                break
            except SQLAlchemyError as exc:
                ALERT_BATCH_FAILURES.labels("retried" if attempt < policy.attempts else "dropped").inc()
                if attempt >= policy.attempts:
                    log.error("alert store: %d state changes not committed after %d attempts: %s",
                              len(batch.writes), attempt, exc)
                    return [w.alert for w in batch.writes.values()]
                log.warning("alert store: commit failed (attempt %d), retrying: %s", attempt, exc)
                await self._sleep(min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (attempt - 1)))
        failed = failed or set()
        self._count_candidates(batch)
        for change, device in batch.changes:
            if change.alert.id not in failed:
                await self.publish(change, device)
        return [w.alert for w in batch.writes.values() if w.alert.id in failed]

    def _count_candidates(self, batch: AlertBatch) -> None:
        for (rule, outcome), n in batch.candidate_outcomes.items():
            ALERT_CANDIDATES.labels(rule, outcome).inc(n)

    async def _apply(self, writes: list[AlertWrite],
                     candidates: dict[tuple[str, str], AlertCandidate | None]) -> set[str]:
        """`apply_batch`, on this thread when the database can refuse at once instead of waiting for a lock (a
        SQLite file), else in a thread (`process_batch` waits for its commit either way; `RulesEngine.run`
        commits in a thread, in the background). Locked by another writer: nothing was written, so the same
        batch goes to a thread, which waits for the lock. Either way `commit` publishes only after this
        returned."""
        if self.inline_writes and self.store.writes_without_waiting:
            try:
                with self.store.without_waiting():
                    return self.store.apply_batch(writes, candidates)
            except StoreBusyError:
                ALERT_BATCH_BUSY.inc()
        failed: set[str] = await self._db(self.store.apply_batch, writes, candidates)
        return failed

    async def _in_batch(self, record: Callable[[AlertBatch], None]) -> list[Alert]:
        """`record` into the batch begun with `begin()` (committed with it: returns []), else into a batch of its
        own committed now (returns the alerts whose writes did not apply)."""
        if self._batch is not None:
            record(self._batch)
            return []
        self.begin()
        assert self._batch is not None
        record(self._batch)
        return await self.commit()

    async def _record(self, alert: Alert, previous: str | None, t_ns: int, device: DeviceInfo | None,
                      publish: bool = True) -> bool:
        """Record a change; outside a batch commit it now. False when it did not apply."""
        return not await self._in_batch(lambda batch: batch.record(alert, previous, t_ns, device, publish))

    async def propose(self, candidate: AlertCandidate) -> None:
        """A pending alert not shown yet (`AlertCandidate`): recorded in the batch, committed with it."""
        await self._in_batch(lambda batch: batch.propose(candidate))

    async def withdraw(self, rule: str, device_id: str, outcome: str = "withdrawn") -> None:
        """The candidate of (rule, device) ends: `withdrawn` (cleared before it was shown) or `shown` (it became
        an alert, opened in the same batch)."""
        await self._in_batch(lambda batch: batch.withdraw(rule, device_id, outcome))

    async def publish(self, change: AlertChange, device: DeviceInfo | None) -> None:
        counter = self._counters.get((change.alert.rule, change.state))
        if counter is None:  # `labels()` checks and joins its arguments on every call: once per (rule, state)
            counter = self._counters[(change.alert.rule, change.state)] = ALERT_STATE_CHANGES.labels(
                change.alert.rule, change.state)
        counter.inc()
        if self.emit_point is not None:
            try:
                await self.emit_point(alert_point(change.alert, change.t_ns))
            except Exception:
                ALERT_POINT_ERRORS.inc()
                log.exception("alert point for %s was not taken by the sink", change.alert.id)
        if self.pipeline is not None and notifiable(change):
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
        """Open the alert (pending, or firing at once). If one is already open (another evaluator), adopt it
        (in a batch: the caller adopts it after `commit()`, which reports the insert as not applied)."""
        alert = Alert.opened(rule=rule, device_id=device.device_id, city=device.city, district=device.district,
                             feed=device.feed, severity=severity, t_ns=t_ns, firing=firing, value=value,
                             threshold=threshold, message_th=message_th, message_en=message_en, labels=labels)
        if not await self._record(alert, None, t_ns, device):
            existing = await self._db(self.store.get_open, rule, device.device_id)
            if existing is None:  # resolved in between: try once more (as `AlertStore.open_alert` does)
                return await self.open(rule=rule, severity=severity, device=device, t_ns=t_ns, firing=firing,
                                       value=value, threshold=threshold, message_th=message_th,
                                       message_en=message_en, labels=labels)
            return existing, []
        return alert, [AlertChange(alert, None, t_ns)]

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
        """pending -> firing (None / the stored alert when someone else moved it meanwhile)."""
        t_ns = after_last_change(alert, t_ns)
        updated = alert.fired(t_ns, value, threshold, message_th, message_en)
        if not await self._record(updated, alert.state, t_ns, device):
            return await self._db(self.store.get, alert.id)
        return updated

    async def resolve(
        self, alert: Alert, device: DeviceInfo | None, t_ns: int, value: float | None = None
    ) -> Alert | None:
        t_ns = after_last_change(alert, t_ns)
        updated = alert.resolved(t_ns, value)
        if not await self._record(updated, alert.state, t_ns, device):
            return None
        return updated

    async def ack(self, alert_id: str, by: str, comment: str, t_ns: int) -> Alert | None:
        """Acknowledge (who, when, comment): stops reminders and escalation."""
        return await self._db(self.store.ack, alert_id, by, comment, t_ns)

    async def note_flap(self, alert: Alert, t_ns: int) -> Alert | None:
        """Count a damped flap (no state change: nothing is published)."""
        updated = alert.flapped(t_ns)
        if not await self._record(updated, alert.state, t_ns, None, publish=False):
            return await self._db(self.store.get, alert.id)
        return updated
