"""Notification as a pipeline of stages (Alertmanager style):

    route (tree, `continue`) -> group (group_by / group_wait / group_interval)
      -> suppress (silences, devices in maintenance, inhibit rules, quiet hours except critical)
      -> dedup (notification log, unique per receiver+alert+event: nothing is sent twice, even after a restart)
      -> queue (one bounded queue and one task per receiver: a slow or failing receiver never delays another)
      -> retry (backoff; RetryableNotifyError is retried, PermanentNotifyError is not)
      -> record (notification log outcome, Prometheus `nakhon_notifications_total{receiver,outcome}`)

Reminders (`repeat_interval`) repeat while an alert fires unacknowledged; `escalate` steps notify the next
receiver after N minutes unacknowledged. Time comes from `tick(now_ns)`, so a fake clock drives the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from collectors.model import DeviceInfo
from rules.conditions import in_schedule
from rules.matchers import matches_all
from rules.metrics import NOTIFICATIONS, RECEIVER_QUEUE_DEPTH
from rules.notify.apprise_notifier import AppriseNotifier
from rules.notify.base import Notifier, NotifyMessage, PermanentNotifyError, RetryableNotifyError
from rules.notify.redact import Redactor
from rules.notify.render import Renderer
from rules.notify.routing import ResolvedRoute, Router, RoutingConfig
from rules.store import Alert, AlertStore, Silence
from rules.timeutil import NS, Clock, SystemClock

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    multiplier: float = 2.0
    timeout_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1)))


class LogNotifier:
    """A receiver without URLs: writes the title to the log (the default until real receivers are set)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, message: NotifyMessage) -> None:
        log.warning("notification for %s (no URLs configured): %s", self.name, message.title)


def build_notifiers(routing: RoutingConfig, env: dict[str, str] | None = None) -> dict[str, Notifier]:
    out: dict[str, Notifier] = {}
    for rc in routing.receivers:
        out[rc.name] = AppriseNotifier(rc.name, rc.urls, env=env) if rc.urls else LogNotifier(rc.name)
    return out


def alert_labels(a: Alert) -> dict[str, str]:
    labels = dict(a.labels)
    labels.update(
        rule=a.rule,
        device_id=a.device_id,
        city=a.city,
        district=a.district,
        feed=a.feed,
        severity=a.severity,
        alert_id=a.id,
    )
    return labels


@dataclass(slots=True)
class _Note:
    alert: Alert
    kind: str  # firing | resolved | reminder-N | escalation-N
    since_ns: int


@dataclass(slots=True)
class _Group:
    receiver: str
    route: ResolvedRoute
    key: str
    created_ns: int
    last_flush_ns: int | None = None
    immediate: bool = False
    notes: dict[tuple[str, str], _Note] = field(default_factory=dict)

    def due_ns(self) -> int:
        if self.immediate:
            return 0
        if self.last_flush_ns is None:
            return self.created_ns + int(self.route.group_wait * NS)
        return self.last_flush_ns + int(self.route.group_interval * NS)


_KIND_ORDER = ("escalation", "firing", "reminder", "resolved")


class NotificationPipeline:
    def __init__(
        self,
        routing: RoutingConfig,
        notifiers: Mapping[str, Notifier],
        store: AlertStore,
        *,
        clock: Clock | None = None,
        renderer: Renderer | None = None,
        retry: RetryPolicy | None = None,
        queue_size: int = 100,
        device_lookup: Callable[[str], DeviceInfo | None] | None = None,
        redact: Callable[[str], str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.routing = routing
        self.router = Router(routing)
        self.notifiers = dict(notifiers)
        self.store = store
        self.clock = clock or SystemClock()
        self.renderer = renderer or Renderer()
        self.retry = retry or RetryPolicy()
        self.queue_size = queue_size
        self.device_lookup = device_lookup
        self.redact = redact or Redactor(u for r in routing.receivers for u in r.urls)
        self._sleep = sleep
        self._groups: dict[tuple[str, str], _Group] = {}
        self._latest: dict[str, Alert] = {}
        self._devices: dict[str, DeviceInfo] = {}
        self._reminded: dict[tuple[str, str], int] = {}
        self._escalated: set[tuple[str, str, int]] = set()
        self._silences: list[Silence] = []
        self._queues: dict[str, asyncio.Queue[NotifyMessage]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        # A group held by group_wait / group_interval is flushed when it falls due, not at the next tick.
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._due_tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._tasks:
            return
        for rc in self.routing.receivers:
            queue: asyncio.Queue[NotifyMessage] = asyncio.Queue(maxsize=self.queue_size)
            self._queues[rc.name] = queue
            self._tasks.append(asyncio.create_task(self._worker(rc.name, queue), name=f"notify-{rc.name}"))

    async def start(self) -> None:
        self._ensure_started()

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for due in list(self._due_tasks):
            due.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._queues.clear()

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every receiver queue is empty and its deliveries finished (tests, shutdown)."""
        await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues.values())), timeout_s)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ---- input --------------------------------------------------------------------------------------------

    async def submit(self, alert: Alert, device: DeviceInfo | None = None) -> None:
        """An alert changed state (engine) — firing and resolved are notified; pending is not."""
        self._ensure_started()
        if device is not None:
            self._devices[device.device_id] = device
        self._latest[alert.id] = alert
        if alert.state not in ("firing", "resolved"):
            return
        now = self.clock.now_ns()
        async with self._lock:
            touched = []
            for route in self.router.match(alert_labels(alert)):
                touched.append(self._add(route, route.receiver, alert, alert.state, now))
            for group in touched:
                if group.notes and now >= group.due_ns():
                    await self._flush(group, now)
                elif group.notes:
                    self._flush_when_due(group, now)
        if alert.state == "resolved":
            self._latest.pop(alert.id, None)

    def _flush_when_due(self, group: _Group, now: int) -> None:
        key = (group.receiver, group.key)
        if key in self._timers:
            return
        delay_s = max(0.0, (group.due_ns() - now) / NS)
        self._timers[key] = asyncio.get_running_loop().call_later(delay_s, self._fall_due, key)

    def _fall_due(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._flush_if_due(key), name="notify-group-due")
        self._due_tasks.add(task)
        task.add_done_callback(self._due_tasks.discard)

    async def _flush_if_due(self, key: tuple[str, str]) -> None:
        async with self._lock:
            group = self._groups.get(key)
            now = self.clock.now_ns()
            if group is not None and group.notes and now >= group.due_ns():
                await self._flush(group, now)

    async def restore(self, alerts: list[Alert]) -> None:
        """After a restart: re-submit open alerts; the notification log drops what was already sent."""
        for alert in alerts:
            if alert.state == "firing":
                await self.submit(alert)

    def _add(
        self, route: ResolvedRoute, receiver: str, alert: Alert, kind: str, now: int, immediate: bool = False
    ) -> _Group:
        key = route.group_key(alert_labels(alert)) + ("" if receiver == route.receiver else f"->{receiver}")
        group = self._groups.get((receiver, key))
        if group is None:
            group = self._groups[(receiver, key)] = _Group(receiver, route, key, now)
        if kind == "resolved":
            unsent_firing = (alert.id, "firing") in group.notes
            if unsent_firing and self.suppressed_by(alert, now) is not None:
                del group.notes[(alert.id, "firing")]
                return group  # fired and resolved while silenced or in maintenance: nothing to tell
            # Otherwise an alert that fired and resolved before its group was sent is still reported, with its
            # resolution: that it fired is what matters (a child left on a bus for five minutes).
            for k in [k for k in group.notes if k[0] == alert.id and k[1] != "firing"]:
                del group.notes[k]
        if kind.startswith("reminder"):
            for k in [k for k in group.notes if k[0] == alert.id and k[1].startswith("reminder")]:
                del group.notes[k]
        group.notes[(alert.id, kind)] = _Note(alert, kind, now)
        group.immediate = group.immediate or immediate
        return group

    # ---- time ---------------------------------------------------------------------------------------------

    async def tick(self, now_ns: int | None = None) -> None:
        """Flush due groups; queue reminders and escalations for firing, unacknowledged alerts."""
        self._ensure_started()
        now = self.clock.now_ns() if now_ns is None else now_ns
        open_alerts = await self._db(self.store.open_alerts)
        self._silences = await self._db(self.store.list_silences, now, False)
        firing = [a for a in open_alerts if a.state == "firing"]
        for a in open_alerts:
            self._latest[a.id] = a
        async with self._lock:
            for a in firing:
                if a.acknowledged or a.fired_ns is None:
                    continue
                age = now - a.fired_ns
                for route in self.router.match(alert_labels(a)):
                    if route.repeat_interval > 0:
                        n = int(age // int(route.repeat_interval * NS))
                        if n >= 1 and self._reminded.get((route.id, a.id), 0) < n:
                            self._reminded[(route.id, a.id)] = n
                            self._add(route, route.receiver, a, f"reminder-{n}", now)
                    for i, step in enumerate(route.escalate, 1):
                        if age >= int(step.after * NS) and (route.id, a.id, i) not in self._escalated:
                            self._escalated.add((route.id, a.id, i))
                            self._add(route, step.receiver, a, f"escalation-{i}", now, immediate=True)
            for gkey, group in list(self._groups.items()):
                if group.notes and now >= group.due_ns():
                    await self._flush(group, now)
                elif not group.notes and group.last_flush_ns is not None:
                    idle = max(group.route.group_interval, group.route.repeat_interval, 3600.0)
                    if now - group.last_flush_ns > int(idle * NS):
                        del self._groups[gkey]
        open_ids = {a.id for a in open_alerts}
        for gone in [k for k in self._reminded if k[1] not in open_ids]:
            del self._reminded[gone]
        self._escalated = {k for k in self._escalated if k[1] in open_ids}
        for alert_id in [k for k in self._latest if k not in open_ids]:
            del self._latest[alert_id]

    # ---- stages -------------------------------------------------------------------------------------------

    def suppressed_by(self, alert: Alert, now: int) -> str | None:
        """Why a notification for `alert` is held back now (silence, maintenance, inhibited) or None."""
        labels = alert_labels(alert)
        for silence in self._silences:
            if silence.active(now) and matches_all(silence.matchers, labels):
                return f"silence:{silence.id}"
        device = self.device_lookup(alert.device_id) if self.device_lookup else None
        device = device or self._devices.get(alert.device_id)
        if device is not None and device.maintenance_until_ns is not None and device.maintenance_until_ns > now:
            return "maintenance"
        sources = [alert_labels(a) for a in self._latest.values() if a.state == "firing"]
        if self.router.inhibited(labels, sources):
            return "inhibited"
        return None

    async def _flush(self, group: _Group, now: int) -> None:
        group.last_flush_ns = now
        group.immediate = False
        quiet = group.route.quiet_hours is not None and in_schedule(group.route.quiet_hours.schedule(), now)
        eligible: list[tuple[tuple[str, str], _Note, Alert]] = []
        for key, note in list(group.notes.items()):
            a = self._latest.get(note.alert.id, note.alert)
            if note.kind != "resolved":
                if a.state == "resolved" or (note.kind != "firing" and a.acknowledged):
                    del group.notes[key]
                    continue
                if self.suppressed_by(a, now) is not None:
                    continue  # held back until the silence / maintenance ends (dropped if it resolves first)
            if quiet and a.severity != "critical":
                continue  # quiet hours: critical alerts ignore them
            eligible.append((key, note, a if note.kind != "resolved" else note.alert))
        if not eligible:
            return
        message_id = uuid.uuid4().hex
        claimed: list[tuple[str, Alert]] = []
        for key, note, a in eligible:
            del group.notes[key]
            if note.kind == "resolved" and not await self._db(self.store.was_sent, group.receiver, a.id, "firing"):
                continue
            ok = await self._db(
                self.store.claim_notification,
                dedup_key=f"{group.receiver}|{a.id}|{note.kind}",
                message_id=message_id,
                alert_id=a.id,
                receiver=group.receiver,
                group_key=group.key,
                kind=note.kind,
                now_ns=now,
            )
            if ok:
                claimed.append((note.kind, a))
        if not claimed:
            return
        kinds = {k.split("-", 1)[0] for k, _ in claimed}
        kind = next(k for k in _KIND_ORDER if k in kinds)
        alerts = [a for _, a in claimed]
        rc = self.routing.receiver(group.receiver)
        title, body = self.renderer.render(alerts, kind, group.receiver, rc.language, now)
        severity = max((a.severity for a in alerts), key=lambda s: {"info": 0, "warning": 1, "critical": 2}.get(s, 0))
        message = NotifyMessage(
            receiver=group.receiver,
            title=title,
            body=body,
            severity=severity,
            kind=kind,
            alert_ids=[a.id for a in alerts],
            group_key=group.key,
            message_id=message_id,
            payload={
                "kind": kind,
                "receiver": group.receiver,
                "group_key": group.key,
                "alerts": [dict(a.to_dict(), ack_url=self.renderer.ack_url(a.id, group.receiver, now)) for a in alerts],
            },
        )
        queue = self._queues.get(group.receiver)
        try:
            if queue is None:
                raise asyncio.QueueFull
            queue.put_nowait(message)
            RECEIVER_QUEUE_DEPTH.labels(group.receiver).set(queue.qsize())
        except asyncio.QueueFull:
            NOTIFICATIONS.labels(group.receiver, "failed").inc()
            log.error("notification queue of receiver %s is full: message dropped", group.receiver)
            await self._db(self.store.finish_message, message_id, "failed", 0, "receiver queue full", now)

    async def _worker(self, receiver: str, queue: asyncio.Queue[NotifyMessage]) -> None:
        while True:
            message = await queue.get()
            try:
                await self._deliver(receiver, message)
            except Exception:  # never let one message kill the receiver's task
                log.exception("notification worker %s failed", receiver)
            finally:
                queue.task_done()
                RECEIVER_QUEUE_DEPTH.labels(receiver).set(queue.qsize())

    async def _deliver(self, receiver: str, message: NotifyMessage) -> None:
        notifier = self.notifiers.get(receiver)
        attempt, outcome, error = 0, "failed", None
        while True:
            attempt += 1
            try:
                if notifier is None:
                    raise PermanentNotifyError(f"no notifier for receiver {receiver!r}")
                await asyncio.wait_for(notifier.send(message), self.retry.timeout_s)
                outcome, error = "sent", None
                break
            except PermanentNotifyError as exc:
                error = f"permanent: {exc}"
                break
            except (RetryableNotifyError, TimeoutError, OSError) as exc:
                error = f"retryable: {exc or type(exc).__name__}"
            except Exception as exc:
                error = f"retryable: {type(exc).__name__}: {exc}"
            if attempt >= self.retry.max_attempts:
                break
            NOTIFICATIONS.labels(receiver, "retried").inc()
            await self._sleep(self.retry.backoff(attempt))
        safe = self.redact(error) if error else None
        NOTIFICATIONS.labels(receiver, outcome).inc()
        if outcome == "failed":
            log.error("notification to %s failed after %d attempt(s): %s", receiver, attempt, safe)
        await self._db(self.store.finish_message, message.message_id, outcome, attempt, safe, self.clock.now_ns())
