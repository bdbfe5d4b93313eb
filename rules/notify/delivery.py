"""The send-with-retry and record stages: one worker per receiver, reading that receiver's owed messages from the
outbox, oldest first, so a slow or failing receiver never delays another and a restart resumes where it stopped.

A retryable failure (connection refused, timeout, HTTP 5xx / 408 / 429, SMTP 4xx) backs off exponentially to the
receiver's cap and tries again for as long as the message still matters; a permanent one (HTTP 4xx, SMTP 5xx, a
bad URL) stops at once with the code in the error. After the route's `fallback.after` of failing, the message is
also handed to the route's fallback receiver (once). Failing receivers show in `nakhon_notifications_failing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.time import NS
from rules.metrics import NOTIFICATIONS, NOTIFICATIONS_FAILING, RECEIVER_QUEUE_DEPTH
from rules.notify.base import BatchNotifier, Notifier, PermanentNotifyError, RetryableNotifyError
from rules.notify.outbox import Outbox, OwedMessage
from rules.notify.retry import RetryPolicy
from rules.timeutil import Clock

log = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_MARGIN_S = 5.0  # a lease outlives the attempt's timeout by this much
POLL_S = 5.0  # an idle worker looks at the outbox this often (leases of processes that died)
RETRY_AFTER_CAP_S = 3600.0  # a receiver's Retry-After is honoured up to this long

Escalate = Callable[[OwedMessage], Awaitable[None]]


def still_matters(
    message: OwedMessage, states: dict[str, tuple[str, bool]], firing_sent: set[str], send_resolved: bool
) -> str | None:
    """None while the message is worth sending; else why not (recorded as `expired`).

    - firing: while one of its alerts is open, or (resolved meanwhile) its resolve is owed after it;
    - reminder / escalation: while one of its alerts is open and unacknowledged;
    - resolved: only to a receiver that got the firing (never a resolve without its firing).
    """
    kind = message.base_kind
    if kind == "resolved":
        return None if firing_sent else "the receiver never got the firing"
    open_ = [a for a in message.alert_ids if states.get(a, ("resolved", False))[0] in ("pending", "firing")]
    if kind == "firing":
        return None if open_ or send_resolved else "resolved before it could be delivered"
    if not any(not states[a][1] for a in open_):
        return "resolved or acknowledged before it could be delivered"
    return None


class ReceiverWorker:
    def __init__(
        self,
        name: str,
        notifier: Notifier | None,
        outbox: Outbox,
        policy: RetryPolicy,
        clock: Clock,
        *,
        send_resolved: bool = True,
        escalate: Escalate | None = None,
        redact: Callable[[str], str] = str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        batch: int = 100,
    ) -> None:
        self.name = name
        self.notifier = notifier
        self.outbox = outbox
        self.policy = policy
        self.clock = clock
        self.send_resolved = send_resolved
        self.escalate = escalate
        self.redact = redact
        self._sleep = sleep
        self.batch = batch
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # what /healthz shows, kept in memory (no query per health check)
        self.failing_since_ns: int | None = None
        self.last_error: str | None = None
        self.in_hand = 0  # owed messages read from the outbox and not yet finished
        NOTIFICATIONS_FAILING.labels(name).set(0)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # ---- control ------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._wake.set()  # resume what is owed from before a restart
            self._task = asyncio.create_task(self.run(), name=f"notify-{self.name}")

    def wake(self) -> None:
        self._wake.set()

    @property
    def idle(self) -> bool:
        return self._idle.is_set() and not self._wake.is_set()

    async def stop(self) -> None:
        """Stop now: what is owed stays owed in the outbox (an interrupted attempt is tried again after restart)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ---- the loop -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                owed = await self._db(self.outbox.owed, self.name, self.batch)
            except Exception:
                log.exception("notifications of %s: reading the outbox failed", self.name)
                await self._sleep(1.0)
                self._wake.set()
                continue
            if not owed:
                self.in_hand = 0
                self._idle.set()
                RECEIVER_QUEUE_DEPTH.labels(self.name).set(0)
                # woken by new messages; also look again now and then for messages whose sender died
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
                self._idle.clear()
                continue
            size = self.notifier.max_batch if isinstance(self.notifier, BatchNotifier) else 1
            for i in range(0, len(owed), size):
                chunk = owed[i : i + size]
                self.in_hand = len(owed) - i
                RECEIVER_QUEUE_DEPTH.labels(self.name).set(self.in_hand)
                try:
                    if size > 1:
                        await self.deliver_batch(chunk)
                    else:
                        await self.deliver(chunk[0])
                except asyncio.CancelledError:
                    raise
                except Exception:  # never let one message kill the receiver's worker
                    ids = ", ".join(m.id for m in chunk)
                    log.exception("notification %s to %s: delivery failed unexpectedly", ids, self.name)
                    await self._sleep(1.0)

    async def _matters(self, message: OwedMessage) -> str | None:
        states = await self._db(self.outbox.alert_states, message.alert_ids)
        sent = (
            await self._db(self.outbox.firing_sent, self.name, message.alert_ids)
            if message.base_kind == "resolved"
            else set()
        )
        return still_matters(message, states, sent, self.send_resolved)

    async def deliver(self, message: OwedMessage) -> str:
        """Send one owed message until accepted, permanently refused, or no longer worth it. Returns the outcome."""

        async def send(live: list[OwedMessage]) -> None:
            if self.notifier is None:
                raise PermanentNotifyError(f"no notifier for receiver {self.name!r}")
            await self.notifier.send(live[0].message())

        return (await self._deliver([message], send))[message.id]

    async def deliver_batch(self, messages: list[OwedMessage]) -> dict[str, str]:
        """Send owed messages together in one request of a batching notifier (LINE: one push of up to 5), retried as
        one until accepted; each is recorded sent only once the request that carried it was accepted. The batch id
        (from the messages it started with) stays the same across retries, so the channel can drop a repeat."""
        notifier = self.notifier
        assert isinstance(notifier, BatchNotifier)
        batch_id = hashlib.sha256(",".join(m.id for m in messages).encode()).hexdigest()[:32]

        async def send(live: list[OwedMessage]) -> None:
            await notifier.send_batch([m.message() for m in live], batch_id)

        return await self._deliver(messages, send)

    async def _deliver(
        self, messages: list[OwedMessage], send: Callable[[list[OwedMessage]], Awaitable[None]]
    ) -> dict[str, str]:
        """The retry loop for messages that travel together (one, unless the notifier batches). Outcome per id."""
        outcomes: dict[str, str] = {}
        attempts = {m.id: m.attempts for m in messages}
        now = self.clock.now_ns()
        wait_ns = max((m.next_attempt_ns - now for m in messages if m.attempts), default=0)
        if wait_ns > 0:  # resumed after a restart in the middle of a backoff
            await self._sleep(min(wait_ns / NS, self.policy.max_backoff_s))
        live = list(messages)
        while True:
            for message in list(live):
                reason = await self._matters(message)
                n = attempts[message.id]
                if reason is not None:
                    await self._db(self.outbox.mark_expired, message.id, n, reason, self.clock.now_ns())
                    NOTIFICATIONS.labels(self.name, "expired").inc()
                    log.info("notification %s to %s not sent: %s", message.id, self.name, reason)
                    outcomes[message.id] = "expired"
                    live.remove(message)
                elif not await self._db(self.outbox.lease, message.id, self.policy.timeout_s + LEASE_MARGIN_S):
                    outcomes[message.id] = "taken"  # another process is sending it (or it was finished meanwhile)
                    live.remove(message)
            if not live:
                return outcomes
            for message in live:
                attempts[message.id] += 1
            retry_after: float | None = None
            try:
                await asyncio.wait_for(send(live), self.policy.timeout_s)
            except PermanentNotifyError as exc:
                error = self.redact(f"permanent: {exc}")
                for message in live:
                    n = attempts[message.id]
                    await self._db(self.outbox.mark_failed, message.id, n, error, self.clock.now_ns())
                    NOTIFICATIONS.labels(self.name, "failed").inc()
                    log.error("notification %s to %s failed permanently: %s", message.id, self.name, error)
                    outcomes[message.id] = "failed"
                self._failing(error)
                return outcomes
            except (RetryableNotifyError, TimeoutError, OSError) as exc:
                error = self.redact(f"retryable: {str(exc) or type(exc).__name__}")
                retry_after = getattr(exc, "retry_after_s", None)
            except Exception as exc:  # an unexpected notifier bug: retry rather than lose the message
                error = self.redact(f"retryable: {type(exc).__name__}: {exc}")
            else:
                for message in live:
                    await self._db(self.outbox.mark_sent, message.id, attempts[message.id], self.clock.now_ns())
                    NOTIFICATIONS.labels(self.name, "sent").inc()
                    outcomes[message.id] = "sent"
                NOTIFICATIONS_FAILING.labels(self.name).set(0)
                self.failing_since_ns, self.last_error = None, None
                return outcomes
            now = self.clock.now_ns()
            for message in live:
                if message.first_failure_ns is None:
                    message.first_failure_ns = now
            self._failing(error, min(m.first_failure_ns or now for m in live))
            for message in [m for m in live if self.policy.gave_up(attempts[m.id])]:
                n = attempts[message.id]
                await self._db(self.outbox.mark_failed, message.id, n, error, now)
                NOTIFICATIONS.labels(self.name, "failed").inc()
                log.error("notification %s to %s failed after %d attempts: %s", message.id, self.name, n, error)
                outcomes[message.id] = "failed"
                live.remove(message)
            if not live:
                return outcomes
            delay = self.policy.backoff(max(attempts[m.id] for m in live))
            if retry_after is not None:  # the receiver said when to come back: not sooner (but not for days)
                delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S))
            for message in live:
                await self._db(
                    self.outbox.note_retry,
                    message.id,
                    attempts[message.id],
                    error,
                    message.first_failure_ns,
                    now + int(delay * NS),
                    now,
                )
                NOTIFICATIONS.labels(self.name, "retried").inc()
                log.warning(
                    "notification %s to %s: attempt %d failed (%s); next in %.1fs",
                    message.id,
                    self.name,
                    attempts[message.id],
                    error,
                    delay,
                )
            for message in live:
                await self._maybe_escalate(message, now)
            await self._sleep(delay)

    def _failing(self, error: str, since_ns: int | None = None) -> None:
        NOTIFICATIONS_FAILING.labels(self.name).set(1)
        if self.failing_since_ns is None:
            self.failing_since_ns = since_ns or self.clock.now_ns()
        self.last_error = error

    def health(self, now_ns: int) -> dict[str, object]:
        since = self.failing_since_ns
        return {
            "failing": since is not None,
            "failing_for_s": round((now_ns - since) / NS, 1) if since is not None else None,
            "last_error": self.last_error,
            "in_hand": self.in_hand,
        }

    async def _maybe_escalate(self, message: OwedMessage, now: int) -> None:
        if message.escalated or not message.fallback or self.escalate is None or message.first_failure_ns is None:
            return
        if now - message.first_failure_ns < int((message.fallback_after_s or 0.0) * NS):
            return
        await self.escalate(message)
        await self._db(self.outbox.mark_escalated, message.id, now)
        message.escalated = True
        NOTIFICATIONS.labels(self.name, "escalated").inc()
