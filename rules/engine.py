"""The rules engine: evaluates every reading against the rules of its feed, keeps per-device state in memory,
and drives the alert lifecycle.

    engine = RulesEngine(ruleset, store, pipeline, emit_point, clock=SystemClock(), devices=directory_list)
    await engine.start()                 # reload open alerts (a restart loses no firing alert)
    asyncio.create_task(engine.run(queue))  # queue: asyncio.Queue[tuple[Reading, DeviceInfo]] (bounded)
    offer(queue, reading, device)        # on the ingest path: never blocks, counts drops

`process` touches the database only when an alert changes state. A `for:` rule's condition that begins to hold
is first an `AlertCandidate` (one narrow row), and becomes a stored, shown pending alert only once it held for
`show_pending_after_s` (or fires at its `for:`): a flap shorter than that writes no alert row, point or message.
`tick(now_ns)` handles what time alone decides: `for` durations, `keep_firing_for` (flap damping), absence of
data (heartbeat), reminders and escalation.

Batches: `run` evaluates up to `batch_size` queued readings, then commits their alert state changes in one
transaction in a thread while it evaluates the next batch (one batch in the background), and only after the
commit publishes them (alert points, notifications) and marks the readings done; `process_batch` does the same
for a list and waits for its commit, `process` for one reading. Heartbeat checks are kept
in a heap by due time, so a tick looks only at the devices whose silence may have run out.
Rule state is per device, so engines can be partitioned by device (one per district, or by MQTT shared
subscription hash) without coordination; the database still keeps one open alert per (rule, device).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.model import DeviceInfo, Reading
from core.time import NS
from rules.conditions import Context, DeviceMemory, Evaluator, Result, bind, heartbeat_s, history_windows, remember
from rules.evidence import summary_context
from rules.lifecycle import AlertBatch, AlertLifecycle, CommitPolicy, EmitPoint
from rules.metrics import RULES_QUEUE_DROPPED, RULES_READINGS_EVALUATED
from rules.model import Absent, Rule, RuleSet
from rules.notify.pipeline import NotificationPipeline
from rules.notify.render import Renderer
from rules.store import Alert, AlertCandidate, AlertStore
from rules.timeutil import Clock, SystemClock

log = logging.getLogger(__name__)

DevicesProvider = Callable[[], Iterable[DeviceInfo]]


@dataclass(slots=True)
class _RuleState:
    alert: Alert | None = None
    candidate: AlertCandidate | None = None  # a pending alert not shown yet (only while `alert` is None)
    last_ok: bool | None = None
    clear_since_ns: int | None = None
    value: float | None = None
    threshold: float | None = None
    opened: Reading | None = None  # the reading that opened the alert (its evidence)
    latest: Reading | None = None  # the latest reading evaluated: what a `for:` firing on a tick shows


@dataclass(slots=True)
class _Watch:
    """One rule as it applies to one device: its state, and its conditions bound to the device's thresholds."""

    rule: Rule
    key: tuple[str, str]
    state: _RuleState
    when: Evaluator | None  # None: an absence rule (a reading ends the absence)
    clear: Evaluator | None


@dataclass(slots=True)
class _DevicePlan:
    """What a device's readings are evaluated with: built when the engine first sees the device, and again when
    it is handed another DeviceInfo for it (the directory swaps in new objects when a device changes) or a
    reading of another feed. Rule matching and threshold lookups then cost nothing per reading."""

    device: DeviceInfo
    feed: str
    memory: DeviceMemory
    watches: tuple[_Watch, ...]


def offer(queue: asyncio.Queue[tuple[Reading, DeviceInfo]], reading: Reading, device: DeviceInfo) -> bool:
    """Hand a reading to the engine without blocking the ingest path; False (and counted) when the queue is full."""
    try:
        queue.put_nowait((reading, device))
        return True
    except asyncio.QueueFull:
        RULES_QUEUE_DROPPED.inc()
        return False


class RulesEngine:
    _newest_ns: int | None = None  # the newest reading time evaluated (what a tick judges at in a backlog)
    _in_flight: asyncio.Task[None] | None = None  # `run`'s batch being committed in the background

    def __init__(
        self,
        rules: RuleSet | Sequence[Rule],
        store: AlertStore,
        notifier_pipeline: NotificationPipeline | None,
        emit_point: EmitPoint | None,
        clock: Clock | None = None,
        devices: DevicesProvider | None = None,
        renderer: Renderer | None = None,
        tick_interval_s: float = 5.0,
        batch_size: int = 500,
        commit_policy: CommitPolicy | None = None,
        known_devices: dict[str, DeviceInfo] | None = None,
        show_pending_after_s: float = 0.0,
    ) -> None:
        """`show_pending_after_s`: how long a `for:` rule's condition must hold before its pending alert is
        stored and shown (0: at once). Until then it is an `AlertCandidate`: a flap shorter than this costs one
        narrow row, no alert row, `alerts` points or messages."""
        self.ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules=list(rules))
        self.store = store
        self.pipeline = notifier_pipeline
        self.clock = clock or SystemClock()
        self.devices = devices
        self.renderer = renderer or (notifier_pipeline.renderer if notifier_pipeline else Renderer())
        self.tick_interval_s = tick_interval_s
        self.batch_size = max(1, batch_size)
        self.show_pending_after_ns = max(0, int(show_pending_after_s * NS))
        self.lifecycle = AlertLifecycle(store, emit_point, notifier_pipeline, commit_policy)
        self._by_feed: dict[str, list[Rule]] = {}
        for rule in self.ruleset.rules:
            self._by_feed.setdefault(rule.feed, []).append(rule)
        self._rules = {r.name: r for r in self.ruleset.rules}
        self._windows = history_windows(self.ruleset)
        self._state: dict[tuple[str, str], _RuleState] = {}
        self._memory: dict[str, DeviceMemory] = {}
        self._plans: dict[str, _DevicePlan] = {}
        # Each device as last evaluated; the embedder may share the dict as the notifications' device lookup.
        self._known: dict[str, DeviceInfo] = known_devices if known_devices is not None else {}
        self._lock = asyncio.Lock()
        self._started_ns: int | None = None
        # Heartbeat index: a heap of (due_ns, rule, device_id); `_due_at` holds each key's live entry (older
        # entries of the key are skipped when popped). `_listed`: the devices as last listed by `devices`.
        self._absence_rules = [r for r in self.ruleset.rules if r.is_absence]
        self._due: list[tuple[int, str, str]] = []
        self._due_at: dict[tuple[str, str], int] = {}
        self._listed: dict[str, DeviceInfo] = {}
        # When the engine first listed each device (heartbeat silence counts from the later of this and start).
        self._first_listed: dict[str, int] = {}

    # ---- start / restart ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load open (pending / firing) alerts from the store; re-offer firing ones to the pipeline (deduplicated)."""
        if self._started_ns is not None:
            return
        self._started_ns = self.clock.now_ns()
        open_alerts = await asyncio.to_thread(self.store.open_alerts)
        for alert in open_alerts:
            if alert.rule in self._rules:
                self._state[(alert.rule, alert.device_id)] = _RuleState(alert=alert, last_ok=True)
        stale: list[AlertCandidate] = []
        for candidate in await asyncio.to_thread(self.store.candidates):
            if candidate.rule in self._rules and candidate.key not in self._state:  # an open alert wins
                self._state[candidate.key] = _RuleState(candidate=candidate, last_ok=True, value=candidate.value,
                                                        threshold=candidate.threshold)
            else:
                stale.append(candidate)
        if stale:
            # A removed rule's candidate (or one an open alert supersedes) would otherwise stay in the store and,
            # were the rule added back, be shown as pending since long ago without a reading saying so.
            async with self._lock:
                self.lifecycle.begin()
                try:
                    for candidate in stale:
                        await self.lifecycle.withdraw(candidate.rule, candidate.device_id, "discarded")
                finally:
                    await self._commit()
            log.info("rules: %d pending candidates of removed rules (or of open alerts) discarded", len(stale))
        if self.pipeline is not None:
            await self.pipeline.restore([a for a in open_alerts if a.rule in self._rules])

    def open_alert(self, rule: str, device_id: str) -> Alert | None:
        st = self._state.get((rule, device_id))
        return st.alert if st else None

    # ---- readings -----------------------------------------------------------------------------------------

    async def process(self, reading: Reading, device: DeviceInfo) -> None:
        """Evaluate one reading and commit what it changed (a batch of one)."""
        await self.process_batch([(reading, device)])

    async def process_batch(self, items: Sequence[tuple[Reading, DeviceInfo]]) -> None:
        """Evaluate readings in order, then commit their alert state changes in one transaction; notifications
        and alert points follow the commit. A reading that cannot be evaluated is logged and skipped."""
        await self.start()
        await self._settle()
        async with self._lock:
            self.lifecycle.begin()
            try:
                await self._evaluate_all(items)
            finally:
                await self._commit()
        RULES_READINGS_EVALUATED.inc(len(items))

    async def _evaluate_all(self, items: Sequence[tuple[Reading, DeviceInfo]]) -> None:
        for reading, device in items:
            try:
                await self._evaluate(reading, device)
            except Exception:
                log.exception("rules: reading of %s could not be evaluated", reading.device_id)

    async def _settle(self) -> None:
        """Wait until the batch `run` is committing in the background is committed and published."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await asyncio.shield(task)  # never raises: `_finish` reports its own failures

    async def _evaluate_in_background(self, items: list[tuple[Reading, DeviceInfo]],
                                      queue: asyncio.Queue[tuple[Reading, DeviceInfo]]) -> None:
        """`run`'s batch: evaluate now; commit and publish in a task, so the next batch is evaluated while this
        one's transaction runs in a thread (SQLite holds no GIL while it writes). One batch at most is in the
        background: the next one's commit starts after it ended (commits and their publications stay in
        order). The readings are marked done only after their batch's commit."""
        async with self._lock:
            self.lifecycle.begin()
            try:
                await self._evaluate_all(items)
            finally:
                batch = self.lifecycle.take()
        await self._settle()
        self._in_flight = asyncio.create_task(self._finish(batch, items, queue), name="rules-commit")

    async def _finish(self, batch: AlertBatch | None, items: list[tuple[Reading, DeviceInfo]],
                      queue: asyncio.Queue[tuple[Reading, DeviceInfo]]) -> None:
        try:
            failed = await self.lifecycle.commit_batch(batch, in_thread=True)
            async with self._lock:
                await self._adopt(failed)
            RULES_READINGS_EVALUATED.inc(len(items))
        except Exception:
            log.exception("rules: a batch of %d readings could not be committed", len(items))
        finally:
            for _ in items:  # done only now: their state changes are committed (or reported) and published
                queue.task_done()

    async def _commit(self) -> None:
        """Commit the batch; re-read from the store the alerts whose writes did not apply (adopt / forget)."""
        await self._adopt(await self.lifecycle.commit())

    async def _adopt(self, failed: list[Alert]) -> None:
        for alert in failed:
            st = self._state.get((alert.rule, alert.device_id))
            if st is None or (st.alert is not None and st.alert.id != alert.id):
                continue
            try:
                st.alert = await asyncio.to_thread(self.store.get_open, alert.rule, alert.device_id)
            except Exception:
                log.exception("rules: alert %s could not be re-read", alert.id)
                st.alert = None  # a later open finds the stored one (unique slot) and adopts it
            st.clear_since_ns = None

    def _plan(self, device: DeviceInfo, feed: str) -> _DevicePlan:
        watches = []
        thresholds = self.ruleset.thresholds
        for rule in self._by_feed.get(feed, ()):
            if not rule.applies_to(device.device_id, device.city, device.district, device.profile):
                continue
            key = (rule.name, device.device_id)
            st = self._state.setdefault(key, _RuleState())  # once per device and rule: not the hot path
            if rule.is_absence:
                watches.append(_Watch(rule, key, st, None, None))
            else:
                clear = bind(rule.clear, device, thresholds) if rule.clear is not None else None
                watches.append(_Watch(rule, key, st, bind(rule.when, device, thresholds), clear))
        memory = self._memory.setdefault(device.device_id, DeviceMemory())
        plan = self._plans[device.device_id] = _DevicePlan(device, feed, memory, tuple(watches))
        return plan

    async def _evaluate(self, reading: Reading, device: DeviceInfo) -> None:
        if self._newest_ns is None or reading.time_ns > self._newest_ns:
            self._newest_ns = reading.time_ns
        self._known[device.device_id] = device
        plan = self._plans.get(device.device_id)
        if plan is None or plan.device is not device or plan.feed != reading.feed:
            plan = self._plan(device, reading.feed)
        mem = plan.memory
        remember(mem, reading, self._windows)
        ctx = Context(reading, device, self.ruleset.thresholds, mem)
        for watch in plan.watches:
            st, rule = watch.state, watch.rule
            if watch.when is None:  # an absence rule
                st.last_ok = False
                if st.alert is not None:
                    await self._resolve(st, device, reading.time_ns, None)
                if watch.key not in self._due_at:
                    self._schedule_absence(rule, device)
                continue
            result = watch.when(ctx)
            # hysteresis: a separate clear condition, else "the alert condition is known to be false"
            clear_ok = watch.clear(ctx).ok is True if watch.clear is not None else result.ok is False
            if result.ok:
                clear_ok = False
            st.last_ok, st.value, st.threshold, st.latest = result.ok, result.value, result.threshold, reading
            if st.alert is None and st.candidate is None and not result.ok:
                continue  # nothing open and nothing begins (what `_step` would conclude)
            await self._step(rule, st, device, reading, result, clear_ok, reading.time_ns)

    def _messages(
        self,
        rule: Rule,
        device: DeviceInfo,
        reading: Reading | None,
        value: float | None,
        threshold: float | None,
        extra: dict[str, Any] | None = None,
        opened: Reading | None = None,
    ) -> tuple[str, str]:
        ctx = summary_context(
            rule=rule.name,
            severity=rule.severity.value,
            for_s=rule.for_,
            device=device,
            opened=opened or reading,
            latest=reading,
            value=value,
            threshold=threshold,
            extra=extra,
        )
        try:
            th, en = self.renderer.render_summaries(rule.summary_th, rule.summary_en, ctx)
        except Exception as exc:  # a template mistake must not stop alerting
            log.warning("summary template of rule %s failed: %s", rule.name, exc)
            th = en = f"{rule.name}: {device.device_id} = {value}"
        return th, en

    async def _open(
        self,
        rule: Rule,
        st: _RuleState,
        device: DeviceInfo,
        reading: Reading | None,
        t_ns: int,
        value: float | None,
        threshold: float | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        th, en = self._messages(rule, device, reading, value, threshold, extra)
        firing = rule.for_ <= 0
        alert, _ = await self.lifecycle.open(
            rule=rule.name,
            severity=rule.severity.value,
            device=device,
            t_ns=t_ns,
            firing=firing,
            value=value,
            threshold=threshold,
            message_th=th,
            message_en=en,
            labels=dict(rule.labels),
        )
        st.alert, st.clear_since_ns, st.opened = alert, None, reading

    async def _fire(
        self,
        rule: Rule,
        st: _RuleState,
        device: DeviceInfo | None,
        reading: Reading | None,
        t_ns: int,
        extra: dict[str, Any] | None = None,
    ) -> None:
        assert st.alert is not None
        dev = device or self._known.get(st.alert.device_id)
        th = en = None
        evidence = reading or st.latest
        # Without a reading since a restart the stored message (made from the opening reading) stays as it is.
        if dev is not None and (evidence is not None or extra is not None):
            th, en = self._messages(rule, dev, evidence, st.value, st.threshold, extra, st.opened)
        st.alert = await self.lifecycle.fire(st.alert, dev, t_ns, st.value, st.threshold, th, en)
        if st.alert is not None and not st.alert.is_open:
            st.alert = None

    async def _resolve(self, st: _RuleState, device: DeviceInfo | None, t_ns: int, value: float | None) -> None:
        assert st.alert is not None
        dev = device or self._known.get(st.alert.device_id)
        await self.lifecycle.resolve(st.alert, dev, t_ns, value)
        st.alert, st.clear_since_ns = None, None

    async def _promote(self, rule: Rule, st: _RuleState, device: DeviceInfo, reading: Reading | None,
                       now: int) -> None:
        """A candidate whose condition still holds at `now`: once it held for `show_pending_after_s` it becomes
        the pending alert it stands for (opened at its `since`, with its opening evidence); once it held for
        the rule's `for:` that alert fires (both in the batch that also deletes the candidate)."""
        candidate = st.candidate
        assert candidate is not None
        held = now - candidate.since_ns
        for_ns = int(rule.for_ * NS)
        if held < for_ns and held < self.show_pending_after_ns:
            return
        st.candidate = None
        await self.lifecycle.withdraw(rule.name, device.device_id, "shown")
        await self._open(rule, st, device, st.opened or st.latest, candidate.since_ns, candidate.value,
                         candidate.threshold)
        if held >= for_ns and st.alert is not None and st.alert.state == "pending":
            await self._fire(rule, st, device, reading, now)

    async def _step(
        self, rule: Rule, st: _RuleState, device: DeviceInfo, reading: Reading, result: Result, clear_ok: bool, now: int
    ) -> None:
        alert = st.alert
        if alert is None:
            candidate = st.candidate
            if candidate is None:
                if result.ok and rule.for_ > 0 and self.show_pending_after_ns > 0:
                    st.candidate, st.opened = AlertCandidate(rule.name, device.device_id, now, result.value,
                                                             result.threshold), reading
                    await self.lifecycle.propose(st.candidate)
                elif result.ok:
                    await self._open(rule, st, device, reading, now, result.value, result.threshold)
            elif clear_ok:
                st.candidate = None
                await self.lifecycle.withdraw(rule.name, device.device_id)
            elif result.ok:
                await self._promote(rule, st, device, reading, now)
            return
        if alert.state == "pending":
            if clear_ok:
                await self._resolve(st, device, now, result.value)
            elif result.ok and now - alert.started_ns >= int(rule.for_ * NS):
                await self._fire(rule, st, device, reading, now)
            return
        # firing
        if clear_ok:
            if rule.keep_firing_for <= 0:
                await self._resolve(st, device, now, result.value)
            elif st.clear_since_ns is None:
                st.clear_since_ns = now
            elif now - st.clear_since_ns >= int(rule.keep_firing_for * NS):
                await self._resolve(st, device, now, result.value)
        elif result.ok and st.clear_since_ns is not None:
            st.clear_since_ns = None  # came back while held: a flap, damped
            updated = await self.lifecycle.note_flap(alert, now)
            if updated is not None:
                st.alert = updated

    # ---- time ---------------------------------------------------------------------------------------------

    async def tick(self, now_ns: int | None = None, *, data_ns: int | None = None) -> None:
        """What time alone decides, at `now_ns` (default: the clock). `data_ns`: judge the alerts' `for`,
        `keep_firing_for` and heartbeats at this earlier time instead (`run` passes it while readings are
        queued: see `_judged_at`); reminders and escalation always go by `now_ns`."""
        await self.start()
        await self._settle()
        now = self.clock.now_ns() if now_ns is None else now_ns
        judged = now if data_ns is None else min(now, data_ns)
        async with self._lock:
            self.lifecycle.begin()
            try:
                await self._tick_states(judged)
            finally:
                await self._commit()
        if self.pipeline is not None:
            await self.pipeline.tick(now)

    def _judged_at(self, queue: asyncio.Queue[tuple[Reading, DeviceInfo]]) -> int | None:
        """The time a tick judges durations at while the engine is behind (readings queued, a backlog drain):
        the newest reading time evaluated, not the wall clock. A `for: 5m` that ran out only against the
        clock while the readings that may clear it are still queued has not held for 5 minutes of data: a
        backlog of past readings would otherwise fire (and notify) every pending alert at each tick, then
        resolve it with the next queued reading. None (the clock) once the queue is empty."""
        if queue.empty() or self._newest_ns is None:
            return None
        return self._newest_ns

    async def _tick_states(self, now: int) -> None:
        for (rule_name, device_id), st in list(self._state.items()):
            rule = self._rules.get(rule_name)
            alert = st.alert
            if rule is None:
                continue
            if alert is None:
                if st.candidate is not None and st.last_ok:
                    device = self._known.get(device_id)
                    if device is not None:
                        await self._promote(rule, st, device, None, now)
                continue
            if (
                alert.state == "pending"
                and st.last_ok
                and not rule.is_absence
                and now - alert.started_ns >= int(rule.for_ * NS)
            ):
                await self._fire(rule, st, self._known.get(device_id), None, now)
            elif (
                alert.state == "firing"
                and st.clear_since_ns is not None
                and now - st.clear_since_ns >= int(rule.keep_firing_for * NS)
            ):
                await self._resolve(st, self._known.get(device_id), now, st.value)
        await self._check_absence(now)

    # ---- heartbeat (absence) index ------------------------------------------------------------------------

    def _silence_start(self, device: DeviceInfo, now: int) -> int:
        """Since when the device counts as silent: its last reading, else the later of engine start and the
        device's first listing (a device registered while the engine runs is not silent since start)."""
        mem = self._memory.get(device.device_id)
        if mem and mem.last_seen_ns is not None:
            return mem.last_seen_ns
        return max(self._started_ns or now, self._first_listed.get(device.device_id, now))

    def _absence_limit_s(self, rule: Rule, device: DeviceInfo) -> float:
        assert isinstance(rule.when, Absent)
        return heartbeat_s(rule.when.absent, device, self.ruleset.thresholds)

    def _watched(self, rule: Rule, device: DeviceInfo) -> bool:
        return (
            device.status in ("active", "")
            and rule.feed == device.feed
            and rule.applies_to(device.device_id, device.city, device.district, device.profile)
        )

    def _push_due(self, rule: Rule, device_id: str, due_ns: int) -> None:
        self._due_at[(rule.name, device_id)] = due_ns
        heapq.heappush(self._due, (due_ns, rule.name, device_id))

    def _schedule_absence(self, rule: Rule, device: DeviceInfo, now: int | None = None) -> None:
        now = self.clock.now_ns() if now is None else now
        limit_ns = int(self._absence_limit_s(rule, device) * NS)
        self._push_due(rule, device.device_id, self._silence_start(device, now) + limit_ns + 1)

    def _index_devices(self, now: int) -> None:
        """Take the current device listing; (re)schedule the devices that are new or changed since the last one.
        Dictionary work per listed device, no rule evaluation: the checks themselves only run when due."""
        assert self.devices is not None
        listed: dict[str, DeviceInfo] = {}
        since_start = self._started_ns or now
        first_pass = not self._first_listed  # devices of the first listing were there when the engine started
        for device in self.devices():
            listed[device.device_id] = device
            self._first_listed.setdefault(device.device_id, since_start if first_pass else now)
            self._known.setdefault(device.device_id, device)
            if self._listed.get(device.device_id) != device:
                for rule in self._absence_rules:
                    if self._watched(rule, device):
                        self._schedule_absence(rule, device, now)
        self._listed = listed

    async def _check_absence(self, now: int) -> None:
        if self.devices is None or not self._absence_rules:
            return
        self._index_devices(now)
        while self._due and self._due[0][0] <= now:
            due, rule_name, device_id = heapq.heappop(self._due)
            key = (rule_name, device_id)
            if self._due_at.get(key) != due:
                continue  # superseded by a later entry of the same key
            del self._due_at[key]
            rule, device = self._rules.get(rule_name), self._listed.get(device_id)
            if rule is None or device is None or not self._watched(rule, device):
                continue  # removed, deactivated or no longer matched: scheduled again if it comes back
            await self._absence_due(rule, device, now)

    async def _absence_due(self, rule: Rule, device: DeviceInfo, now: int) -> None:
        limit_s = self._absence_limit_s(rule, device)
        last = self._silence_start(device, now)
        silent_s = (now - last) / NS
        if silent_s <= limit_s:  # heard from since it was scheduled
            self._push_due(rule, device.device_id, last + int(limit_s * NS) + 1)
            return
        st = self._state.setdefault((rule.name, device.device_id), _RuleState())
        st.value, st.threshold, st.last_ok = silent_s, limit_s, True
        extra = {"silent_for": silent_s, "heartbeat": limit_s}
        if st.alert is None:
            await self._open(rule, st, device, None, now, silent_s, limit_s, extra)
        elif st.alert.state == "pending" and now - st.alert.started_ns >= int(rule.for_ * NS):
            await self._fire(rule, st, device, None, now, extra)
        if st.alert is not None and st.alert.state == "pending":  # check again when its `for` has passed
            self._push_due(rule, device.device_id, max(now + 1, st.alert.started_ns + int(rule.for_ * NS)))
        # firing: nothing more to check until a reading resolves it (the reading schedules the key again)

    # ---- the loop -----------------------------------------------------------------------------------------

    async def run(self, queue: asyncio.Queue[tuple[Reading, DeviceInfo]], tick_interval_s: float | None = None) -> None:
        """Consume readings from the bounded queue; tick every `tick_interval_s` (wall time)."""
        await self.start()
        interval = tick_interval_s or self.tick_interval_s
        next_tick = time.monotonic() + interval
        try:
            await self._consume(queue, interval, next_tick)
        finally:  # stopped (cancelled): the batch in the background still commits, publishes and is marked done
            await self._settle()

    async def _consume(self, queue: asyncio.Queue[tuple[Reading, DeviceInfo]], interval: float,
                       next_tick: float) -> None:
        while True:
            items: list[tuple[Reading, DeviceInfo]] = []
            try:
                # Drain what is queued without a timer per reading; wait (until the next tick) only when empty.
                items.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                with contextlib.suppress(TimeoutError):
                    items.append(await asyncio.wait_for(queue.get(), max(0.0, next_tick - time.monotonic())))
            while items and len(items) < self.batch_size:
                try:
                    items.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            if items:
                try:
                    await self._evaluate_in_background(items, queue)
                except Exception:
                    log.exception("rules: a batch of %d readings could not be processed", len(items))
                    await self._settle()  # done in queue order: the batch before is committed first
                    for _ in items:
                        queue.task_done()
                await asyncio.sleep(0)  # draining a full queue must not starve ingestion's acks
            if time.monotonic() >= next_tick:
                try:
                    await self.tick(data_ns=self._judged_at(queue))
                except Exception:
                    log.exception("rules: tick failed")
                next_tick = time.monotonic() + interval
