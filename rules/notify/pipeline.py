"""Notification as a chain of small stages (Alertmanager's `notify.Stage`), each its own module:

    route    (routing.Router: the tree, `continue`)
    group    (grouping.Grouper: group_by / group_wait / group_interval; a storm is one message per group)
    suppress (suppress.Suppressor: silences, devices in maintenance, inhibit rules, quiet hours except critical)
    dedup + write-ahead (outbox.Outbox.enqueue: unique receiver|alert|event, message recorded as owed)
    send with retry (delivery.ReceiverWorker: one per receiver, oldest first, backoff to a cap, fallback receiver)
    record   (outbox: `sent` only after the receiver accepted; `nakhon_notifications_total{receiver,outcome}`)

Reminders (`repeat_interval`) repeat while an alert fires unacknowledged; `escalate` steps notify the next receiver
after N minutes unacknowledged. Time comes from `tick(now_ns)`, so a fake clock drives the tests. This class only
wires the stages together and holds what they share (the latest state of each alert, the devices).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from core.model import DeviceInfo
from core.time import NS
from rules.notify.apprise_notifier import AppriseNotifier
from rules.notify.base import Notifier, NotifyMessage
from rules.notify.delivery import ReceiverWorker
from rules.notify.grouping import SEVERITY_RANK, Group, Grouper, worst_first
from rules.notify.line import LineNotifier, is_line_url
from rules.notify.outbox import Candidate, Outbox, OwedMessage, new_message_id
from rules.notify.payload import build_payload
from rules.notify.redact import Redactor
from rules.notify.render import Renderer
from rules.notify.retry import RetryPolicy
from rules.notify.routing import ReceiverConfig, ResolvedRoute, Router, RoutingConfig
from rules.notify.smtp import SmtpNotifier, is_smtp_url
from rules.notify.suppress import Suppressor
from rules.notify.webhook import WebhookNotifier, is_webhook_url
from rules.store import Alert, AlertStore
from rules.timeutil import Clock, SystemClock

log = logging.getLogger(__name__)
T = TypeVar("T")

LISTED_ALERTS = 10  # a grouped message names the worst this many alerts and counts the rest
RESOLVE_LOOKBACK_S = 24 * 3600.0  # after a restart, look this far back for resolves lost with a group's memory


class LogNotifier:
    """A receiver without URLs: writes the title to the log (the default until real receivers are set)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, message: NotifyMessage) -> None:
        log.warning("notification for %s (no URLs configured): %s", self.name, message.title)


def build_notifier(rc: ReceiverConfig, env: dict[str, str] | None = None) -> Notifier:
    """A receiver's notifier: our own SMTP (one connection per burst), webhook (structured payload) and LINE (batched
    pushes) clients when every URL is of their kind, apprise (Telegram, SMS gateways, mixed kinds, …) otherwise."""
    if not rc.urls:
        return LogNotifier(rc.name)
    if all(is_smtp_url(u) for u in rc.urls):
        return SmtpNotifier(rc.name, rc.urls, env=env)
    if all(is_webhook_url(u) for u in rc.urls):
        return WebhookNotifier(rc.name, rc.urls, env=env)
    if all(is_line_url(u) for u in rc.urls):
        return LineNotifier(rc.name, rc.urls, env=env)
    return AppriseNotifier(rc.name, rc.urls, env=env)


def build_notifiers(routing: RoutingConfig, env: dict[str, str] | None = None) -> dict[str, Notifier]:
    return {rc.name: build_notifier(rc, env) for rc in routing.receivers}


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
        listed_alerts: int = LISTED_ALERTS,
    ) -> None:
        self.routing = routing
        self.router = Router(routing)
        self.notifiers = dict(notifiers)
        self.store = store
        self.outbox = Outbox(store.engine)
        self.clock = clock or SystemClock()
        self.renderer = renderer or Renderer()
        self.retry = retry or RetryPolicy()
        self.queue_size = queue_size
        self.device_lookup = device_lookup
        self.redact = redact or Redactor(u for r in routing.receivers for u in r.urls)
        self.listed_alerts = listed_alerts
        self._sleep = sleep
        self.groups = Grouper()
        self._latest: dict[str, Alert] = {}
        self._devices: dict[str, DeviceInfo] = {}
        self.suppressor = Suppressor(self.router, alert_labels, self._device, lambda: self._latest.values())
        self._reminded: dict[tuple[str, str], int] = {}
        self._escalated: set[tuple[str, str, int]] = set()
        self.workers: dict[str, ReceiverWorker] = {}
        self._lock = asyncio.Lock()
        # A group held by group_wait / group_interval is flushed when it falls due, not at the next tick.
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._due_tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self.workers:
            return
        for rc in self.routing.receivers:
            worker = ReceiverWorker(
                rc.name,
                self.notifiers.get(rc.name),
                self.outbox,
                self.retry.with_intervals(rc.retry.initial, rc.retry.max),
                self.clock,
                send_resolved=rc.send_resolved,
                escalate=self._escalate_to_fallback,
                redact=self.redact,
                sleep=self._sleep,
                batch=self.queue_size,
            )
            self.workers[rc.name] = worker
            worker.start()  # resumes what the outbox still owes this receiver, oldest first

    async def start(self) -> None:
        self._ensure_started()

    async def stop(self, grace_s: float = 0.0) -> None:
        """Give the receivers up to `grace_s` to take what is owed, then stop; the rest stays in the outbox for the
        next start (a message interrupted mid-attempt is tried again then)."""
        if grace_s > 0 and self.workers:
            try:
                await self.drain(grace_s)
            except TimeoutError:
                log.warning("notifications still owed at shutdown stay in the outbox for the next start")
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for due in list(self._due_tasks):
            due.cancel()
        for worker in self.workers.values():
            await worker.stop()
        self.workers.clear()
        for notifier in self.notifiers.values():
            close = getattr(notifier, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("closing notifier %s failed", notifier.name)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until no receiver owes anything (tests, shutdown); TimeoutError if that takes longer."""
        deadline = time.monotonic() + timeout_s
        while not all(w.idle for w in self.workers.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"notifications still owed after {timeout_s}s")
            await asyncio.sleep(0.01)

    def health(self) -> dict[str, Any]:
        """`/healthz` detail per receiver (from memory, no query). A failing receiver does not make the process
        unhealthy — restarting would not help, and what is owed waits in the outbox; it is shown and counted."""
        now = self.clock.now_ns()
        receivers = {name: w.health(now) for name, w in self.workers.items()}
        return {
            "ok": True,
            "failing_receivers": sorted(name for name, h in receivers.items() if h["failing"]),
            "receivers": receivers,
        }

    def _device(self, device_id: str) -> DeviceInfo | None:
        device = self.device_lookup(device_id) if self.device_lookup else None
        return device or self._devices.get(device_id)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ---- input: route -> group ----------------------------------------------------------------------------

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
            touched = [
                self._add(route, route.receiver, alert, alert.state, now)
                for route in self.router.match(alert_labels(alert))
            ]
            for group in touched:
                if group.is_due(now):
                    await self._flush(group, now)
                elif group.notes:
                    self._flush_when_due(group, now)
        if alert.state == "resolved":
            self._latest.pop(alert.id, None)

    def _add(
        self, route: ResolvedRoute, receiver: str, alert: Alert, kind: str, now: int, immediate: bool = False
    ) -> Group:
        held = kind == "resolved" and self.suppressor.held_by(alert, now) is not None
        return self.groups.add(route, receiver, alert, alert_labels(alert), kind, now, immediate=immediate, held=held)

    def _flush_when_due(self, group: Group, now: int) -> None:
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
            group = self.groups.get(key)
            now = self.clock.now_ns()
            if group is not None and group.is_due(now):
                await self._flush(group, now)

    async def restore(self, alerts: list[Alert]) -> None:
        """After a restart: the workers resume what the outbox owes; open alerts are re-submitted and resolves that
        were still in a group's memory at the crash are found again (the dedup stage drops what was already told)."""
        self._ensure_started()
        for alert in alerts:
            if alert.state == "firing":
                await self.submit(alert)
        since = self.clock.now_ns() - int(RESOLVE_LOOKBACK_S * NS)
        for alert_id in await self._db(self.outbox.resolves_owed_after_restart, since):
            resolved = await self._db(self.store.get, alert_id)
            if resolved is not None:
                await self.submit(resolved)

    # ---- time: reminders, escalations, due groups ---------------------------------------------------------

    async def tick(self, now_ns: int | None = None) -> None:
        """Flush due groups; queue reminders and escalations for firing, unacknowledged alerts."""
        self._ensure_started()
        now = self.clock.now_ns() if now_ns is None else now_ns
        open_alerts = await self._db(self.store.open_alerts)
        self.suppressor.silences = await self._db(self.store.list_silences, now, False)
        for a in open_alerts:
            self._latest[a.id] = a
        async with self._lock:
            for a in open_alerts:
                if a.state == "firing" and not a.acknowledged and a.fired_ns is not None:
                    self._remind_and_escalate(a, now)
            for group in self.groups:
                if group.is_due(now):
                    await self._flush(group, now)
            self.groups.forget_idle(now)
        open_ids = {a.id for a in open_alerts}
        for gone in [k for k in self._reminded if k[1] not in open_ids]:
            del self._reminded[gone]
        self._escalated = {k for k in self._escalated if k[1] in open_ids}
        for alert_id in [k for k in self._latest if k not in open_ids]:
            del self._latest[alert_id]

    def _remind_and_escalate(self, a: Alert, now: int) -> None:
        assert a.fired_ns is not None
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

    # ---- flush: suppress -> dedup + outbox -> wake the receiver's worker -----------------------------------

    def suppressed_by(self, alert: Alert, now: int) -> str | None:
        return self.suppressor.held_by(alert, now)

    def _eligible(self, group: Group, now: int) -> list[tuple[tuple[str, str], str, Alert]]:
        out = []
        send_resolved = self.routing.receiver(group.receiver).send_resolved
        for key, note in list(group.notes.items()):
            if note.kind == "resolved" and not send_resolved:
                del group.notes[key]
                continue
            a = self._latest.get(note.alert.id, note.alert)
            if note.kind != "resolved":
                if a.state == "resolved" or (note.kind != "firing" and a.acknowledged):
                    del group.notes[key]
                    continue
                if self.suppressor.held_by(a, now) is not None:
                    continue  # held back until the silence / maintenance ends (dropped if it resolves first)
            if Suppressor.quiet(group.route, a, now):
                continue
            out.append((key, note.kind, a if note.kind != "resolved" else note.alert))
        return out

    async def _flush(self, group: Group, now: int) -> None:
        group.last_flush_ns = now
        group.immediate = False
        eligible = self._eligible(group, now)
        if not eligible:
            return
        for key, _, _ in eligible:
            del group.notes[key]
        by_key = {(a.id, kind): a for _, kind, a in eligible}
        candidates = [Candidate(a.id, kind) for (_, kind, a) in eligible]
        fallback = group.route.fallback

        def build(claimed: list[Candidate]) -> NotifyMessage:
            return self._message(group.receiver, group, [(c.kind, by_key[(c.alert_id, c.kind)]) for c in claimed], now)

        owed = await self._db(
            self.outbox.enqueue,
            group.receiver,
            group.key,
            candidates,
            build,
            now,
            fallback=fallback.receiver if fallback else None,
            fallback_after_s=fallback.after if fallback else None,
        )
        if owed is not None and group.receiver in self.workers:
            self.workers[group.receiver].wake()

    def _message(self, receiver: str, group: Group | None, claimed: list[tuple[str, Alert]], now: int) -> NotifyMessage:
        kinds = {k.split("-", 1)[0] for k, _ in claimed}
        kind = next(k for k in _KIND_ORDER if k in kinds)
        alerts = [a for _, a in claimed]
        rc = self.routing.receiver(receiver)
        listed = worst_first(alerts)[: self.listed_alerts]
        title, body = self.renderer.render(listed, kind, receiver, rc.language, now, total=len(alerts))
        severity = max((a.severity for a in alerts), key=lambda s: SEVERITY_RANK.get(s, 0))
        group_key = group.key if group else f"fallback->{receiver}"
        message_id = new_message_id()
        payload = build_payload(
            receiver=receiver,
            kind=kind,
            group_key=group_key,
            group_labels=group.labels if group else {},
            alerts=alerts,
            labels_of=alert_labels,
            renderer=self.renderer,
            now_ns=now,
            device_name=lambda d: dev.name if (dev := self._device(d)) is not None else None,
        )
        payload["title"], payload["message"] = title, body
        return NotifyMessage(
            receiver=receiver,
            title=title,
            body=body,
            severity=severity,
            kind=kind,
            alert_ids=[a.id for a in alerts],
            group_key=group_key,
            message_id=message_id,
            payload=payload,
        )

    async def _escalate_to_fallback(self, failing: OwedMessage) -> None:
        """A message failing for the route's `fallback.after`: the same news to the fallback receiver, once per
        (alert, event) there, rendered for that receiver (its language, its own acknowledge links)."""
        target = failing.fallback
        if target is None or target not in self.workers:
            return
        alerts = [a for a in [await self._db(self.store.get, i) for i in failing.alert_ids] if a is not None]
        if not alerts:
            return
        by_id = {a.id: a for a in alerts}
        kind = failing.kind
        now = self.clock.now_ns()

        def build(claimed: list[Candidate]) -> NotifyMessage:
            return self._message(target, None, [(c.kind, by_id[c.alert_id]) for c in claimed], now)

        owed = await self._db(
            self.outbox.enqueue,
            target,
            f"fallback:{failing.group_key}",
            [Candidate(a.id, kind) for a in alerts],
            build,
            now,
        )
        log.warning(
            "receiver %s failing: message %s handed to fallback receiver %s", failing.receiver, failing.id, target
        )
        if owed is not None:
            self.workers[target].wake()


__all__ = ["LogNotifier", "NotificationPipeline", "RetryPolicy", "alert_labels", "build_notifier", "build_notifiers"]
