"""Alert storms: state changes committed in batches, published only after the commit, heartbeat checks by due time.

Each test attacks one guarantee of issue 11: a flap inside one batch, a crash or a database away between the
transition and the commit, another evaluator holding the slot, a notifier reading the store at the moment a
message goes out, a tick over many quiet devices."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from core.model import DeviceInfo, Reading
from core.time import NS
from rules.check import load_rules_dir
from rules.engine import RulesEngine
from rules.lifecycle import CommitPolicy
from rules.notify.base import NotifyMessage
from rules.notify.render import Renderer
from rules.store import Alert, AlertStore, AlertWrite
from tests.rules.conftest import T0, PointSink, device, make_pipeline, minutes, reading

FLOOD = ["flood_level_high", "flood_level_overbank"]


def engine_for(names: list[str], store: Any, sink: PointSink, clock: Any, pipeline: Any = None,
               **kw: Any) -> RulesEngine:
    return RulesEngine(load_rules_dir().subset(names), store, pipeline, sink, clock=clock, **kw)


def last_state_per_alert(sink: PointSink) -> dict[str, str]:
    """The `alerts` measurement's view: the state of the last point of every alert id."""
    out: dict[str, str] = {}
    for p in sorted(sink.points, key=lambda p: p.time_ns):
        out[str(p.fields["alert_id"])] = str(p.fields["state"])
    return out


def store_states(store: AlertStore) -> dict[str, str]:
    return {a.id: a.state for a in store.list_alerts(limit=None)}


async def _no_sleep(_s: float) -> None:
    return None


async def test_a_flap_within_one_batch_ends_in_the_right_state_and_the_store_matches_the_points(
    store, clock, sink
) -> None:
    eng = engine_for(FLOOD, store, sink, clock)
    dev = device("gauge-1", "flood")
    # 71 % opens flood_level_high (pending), 60 % clears it, again and again; the last reading opens it once more
    levels = [71.0, 60.0] * 5 + [72.0]
    await eng.process_batch([(reading(dev, T0 + minutes(i), level_pct_bank=v), dev) for i, v in enumerate(levels)])
    alerts = store.list_alerts(limit=None)
    assert len(alerts) == 6  # five opened and resolved within the batch, one left open
    assert sorted(a.state for a in alerts) == ["pending"] + ["resolved"] * 5
    open_one = store.get_open("flood_level_high", "gauge-1")
    assert open_one is not None and open_one.started_ns == T0 + minutes(10) and open_one.value == 72.0
    assert eng.open_alert("flood_level_high", "gauge-1") == open_one
    # every change is a point, in order; the last point of each alert agrees with the store
    assert [s for _, _, s in sink.states] == ["pending", "resolved"] * 5 + ["pending"]
    assert last_state_per_alert(sink) == store_states(store)


async def test_open_fire_and_resolve_in_one_batch_is_one_row_with_its_whole_history(store, clock, sink) -> None:
    eng = engine_for(["flood_level_overbank"], store, sink, clock)
    dev = device("gauge-2", "flood")
    batch = [(reading(dev, T0, level_pct_bank=104.0), dev),
             (reading(dev, T0 + minutes(3), level_pct_bank=106.0), dev),  # `for: 2m` passed: firing
             (reading(dev, T0 + minutes(4), level_pct_bank=90.0), dev),  # cleared, held by keep_firing_for
             (reading(dev, T0 + minutes(15), level_pct_bank=90.0), dev)]  # held 11 min > 10 min: resolved
    await eng.process_batch(batch)
    (alert,) = store.list_alerts(limit=None)
    assert (alert.state, alert.fired_ns, alert.resolved_ns) == ("resolved", T0 + minutes(3), T0 + minutes(15))
    assert store.get_open("flood_level_overbank", "gauge-2") is None
    assert [s for _, _, s in sink.states] == ["pending", "firing", "resolved"]


async def test_a_batch_of_many_transitions_is_one_transaction(tmp_path, clock, sink) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    try:
        eng = engine_for(FLOOD, store, sink, clock)
        devs = [device(f"g-{i}", "flood") for i in range(200)]
        await eng.start()
        commits.clear()
        await eng.process_batch([(reading(d, T0, level_pct_bank=71.0), d) for d in devs])
        assert len(commits) == 1
        assert len(store.open_alerts()) == 200 and len(sink.points) == 200
    finally:
        store.close()


async def test_queued_readings_are_done_only_once_their_changes_are_committed(store, clock, sink) -> None:
    eng = engine_for(FLOOD, store, sink, clock, batch_size=7)
    queue: asyncio.Queue[tuple[Reading, DeviceInfo]] = asyncio.Queue(maxsize=100)
    devs = [device(f"g-{i}", "flood") for i in range(30)]
    task = asyncio.create_task(eng.run(queue, tick_interval_s=3600))
    try:
        for d in devs:
            await queue.put((reading(d, T0, level_pct_bank=101.0), d))
        await asyncio.wait_for(queue.join(), 30)
        # join() returned: every reading's alerts are in the store and their points were handed over
        assert len(store.open_alerts()) == 60
        assert len(sink.points) == 60
    finally:
        task.cancel()


class FlakyStore(AlertStore):
    """The database goes away for `failures` batch commits (a crash between transition and commit)."""

    def __init__(self, url: str, failures: int) -> None:
        super().__init__(url)
        self.failures = failures
        self.attempts = 0

    def apply_batch(self, writes: Any, candidates: Any = None) -> set[str]:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("INSERT", {}, Exception("disk I/O error (test)"))
        return super().apply_batch(writes, candidates)


async def test_a_crash_before_the_commit_sends_no_notification_and_no_point(tmp_path, clock, sink) -> None:
    store = FlakyStore(f"sqlite:///{tmp_path / 'alerts.db'}", failures=3)
    try:
        pipeline, mem = make_pipeline(store, clock)
        eng = engine_for(["flood_level_overbank"], store, sink, clock, pipeline,
                         commit_policy=CommitPolicy(attempts=3, initial_backoff_s=0))
        eng.lifecycle._sleep = _no_sleep
        dev = device("gauge-3", "flood")
        batch = [(reading(dev, T0, level_pct_bank=104.0), dev),
                 (reading(dev, T0 + minutes(3), level_pct_bank=105.0), dev)]
        await eng.process_batch(batch)  # pending then firing, never committed (3 attempts, 3 failures)
        await pipeline.drain()
        assert store.attempts == 3
        assert store.list_alerts(limit=None) == []
        assert sink.points == [] and mem["ops"].sent == []
        assert eng.open_alert("flood_level_overbank", "gauge-3") is None  # the engine forgot the uncommitted alert
        # the database is back: the next reading opens (and, `for` passed, fires) exactly what is stored
        await eng.process(reading(dev, T0 + minutes(4), level_pct_bank=106.0), dev)
        await eng.process(reading(dev, T0 + minutes(7), level_pct_bank=106.0), dev)
        await pipeline.drain()
        stored = store.get_open("flood_level_overbank", "gauge-3")
        assert stored is not None and stored.state == "firing"
        assert [m.alert_ids for m in mem["ops"].sent] == [[stored.id]]
        assert last_state_per_alert(sink) == store_states(store)
    finally:
        await pipeline.stop()
        store.close()


async def test_a_commit_that_fails_once_is_retried_and_nothing_is_lost(tmp_path, clock, sink) -> None:
    store = FlakyStore(f"sqlite:///{tmp_path / 'alerts.db'}", failures=1)
    try:
        eng = engine_for(["flood_level_overbank"], store, sink, clock,
                         commit_policy=CommitPolicy(attempts=3, initial_backoff_s=0))
        eng.lifecycle._sleep = _no_sleep
        dev = device("gauge-4", "flood")
        await eng.process(reading(dev, T0, level_pct_bank=104.0), dev)
        assert store.attempts == 2
        assert [a.state for a in store.list_alerts(limit=None)] == ["pending"]
        assert [s for _, _, s in sink.states] == ["pending"]
    finally:
        store.close()


class CheckingNotifier:
    """A receiver that, when a message arrives, reads the alert store on its own connection: every state the
    message reports must already be committed (a firing alert stored as fired: firing, or resolved since; a
    resolution stored as resolved)."""

    def __init__(self, url: str) -> None:
        self.reader = AlertStore(url, create=False)
        self.sent: list[NotifyMessage] = []
        self.mismatches: list[tuple[str, str, str | None]] = []

    async def send(self, message: NotifyMessage) -> None:
        for item in message.payload["alerts"]:
            stored = self.reader.get(item["alert_id"])
            committed = stored is not None and (
                stored.state == "resolved" if item["state"] == "resolved" else stored.fired_ns is not None
            )
            if not committed:
                self.mismatches.append((item["alert_id"], item["state"], stored.state if stored else None))
        self.sent.append(message)


async def test_no_message_reports_a_state_the_store_does_not_hold(tmp_path, clock, sink) -> None:
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    store = AlertStore(url)
    checking = CheckingNotifier(url)
    pipeline, _ = make_pipeline(store, clock, notifiers={"ops": checking, "line": checking, "boss": checking})
    try:
        eng = engine_for(["flood_level_overbank"], store, sink, clock, pipeline)
        devs = [device(f"g-{i}", "flood") for i in range(20)]
        # in one batch: every gauge opens, fires (`for: 2m` passed) and half of them resolve
        batch = [(reading(d, T0, level_pct_bank=104.0), d) for d in devs]
        batch += [(reading(d, T0 + minutes(3), level_pct_bank=105.0), d) for d in devs]
        batch += [(reading(d, T0 + minutes(4 + 11 * (i % 2)), level_pct_bank=90.0), d) for i, d in enumerate(devs)]
        batch += [(reading(d, T0 + minutes(15), level_pct_bank=90.0), d) for d in devs[::2]]
        await eng.process_batch(batch)
        await pipeline.drain()
        assert checking.sent, "the storm produced no notification"
        assert checking.mismatches == []
        assert last_state_per_alert(sink) == store_states(store)
    finally:
        await pipeline.stop()
        checking.reader.close()
        store.close()


async def test_a_slot_held_by_another_evaluator_is_adopted_not_duplicated(store, clock, sink) -> None:
    other_sink = PointSink()
    mine, other = engine_for(FLOOD, store, sink, clock), engine_for(FLOOD, store, other_sink, clock)
    dev = device("gauge-5", "flood")
    await other.process(reading(dev, T0, level_pct_bank=71.0), dev)
    theirs = store.get_open("flood_level_high", "gauge-5")
    assert theirs is not None
    # mine opens the same (rule, device) in a batch with another gauge's change: only the other gauge is written
    dev2 = device("gauge-6", "flood")
    await mine.process_batch([(reading(dev, T0 + NS, level_pct_bank=72.0), dev),
                              (reading(dev2, T0 + NS, level_pct_bank=72.0), dev2)])
    assert len([a for a in store.open_alerts() if a.device_id == "gauge-5"]) == 1
    assert mine.open_alert("flood_level_high", "gauge-5") == theirs  # adopted
    assert [(r, d) for r, d, _ in sink.states] == [("flood_level_high", "gauge-6")]  # nothing about gauge-5
    assert {a.device_id for a in store.open_alerts()} == {"gauge-5", "gauge-6"}


async def test_an_alert_moved_by_someone_else_is_not_overwritten_nor_published(store, clock, sink) -> None:
    eng = engine_for(["flood_level_overbank"], store, sink, clock)
    dev = device("gauge-7", "flood")
    await eng.process(reading(dev, T0, level_pct_bank=104.0), dev)
    pending = store.get_open("flood_level_overbank", "gauge-7")
    assert pending is not None
    store.resolve(pending.id, T0 + minutes(1))  # another process resolved it meanwhile
    await eng.process(reading(dev, T0 + minutes(3), level_pct_bank=105.0), dev)  # would fire the pending one
    moved = store.get(pending.id)
    assert moved is not None and moved.state == "resolved"
    assert [s for _, _, s in sink.states] == ["pending"]
    assert eng.open_alert("flood_level_overbank", "gauge-7") is None  # re-read: nothing open any more


def test_apply_batch_reports_exactly_the_writes_that_did_not_apply(store) -> None:
    a, _ = store.open_alert(rule="r", device_id="d1", city="c", district="x", feed="flood", severity="warning",
                            state="pending", t_ns=T0)
    b, _ = store.open_alert(rule="r", device_id="d2", city="c", district="x", feed="flood", severity="warning",
                            state="pending", t_ns=T0)
    store.resolve(b.id, T0 + 1)  # b moved elsewhere: its guarded update must not match

    fire_a = dataclasses.replace(a, state="firing", fired_ns=T0 + 5, updated_ns=T0 + 5)
    fire_b = dataclasses.replace(b, state="firing", fired_ns=T0 + 5, updated_ns=T0 + 5)
    failed = store.apply_batch([AlertWrite(fire_a, insert=False, expect="pending"),
                                AlertWrite(fire_b, insert=False, expect="pending")])
    assert failed == {b.id}
    got_a, got_b = store.get(a.id), store.get(b.id)
    assert got_a is not None and got_a.state == "firing" and got_a.fired_ns == T0 + 5
    assert got_b is not None and got_b.state == "resolved"


def test_a_batch_applied_again_changes_nothing_and_fails_nothing(store: AlertStore) -> None:
    """A commit whose outcome was lost (the error came after the data was durable) is retried by the commit
    policy: the same batch again. Re-inserting rows already there, a resolved one holding only its id and an
    open one its (rule, device) slot too, and re-applying a guarded update are no failure and write nothing
    twice (a failure would keep the changes out of the `alerts` measurement). SQLite and PostgreSQL."""
    a = Alert.opened(rule="r", device_id="d1", city="c", district="x", feed="flood", severity="warning",
                     t_ns=T0, firing=False)
    b = Alert.opened(rule="r", device_id="d2", city="c", district="x", feed="flood", severity="warning",
                     t_ns=T0, firing=False).resolved(T0 + 1)
    opened = store.prepare([AlertWrite(a, insert=True), AlertWrite(b, insert=True)])
    assert store.apply_batch(opened) == set()
    assert store.apply_batch(opened) == set()
    moved = store.prepare([AlertWrite(a.resolved(T0 + 2), insert=False, expect="pending")])
    assert store.apply_batch(moved) == set()
    assert store.apply_batch(moved) == set()
    assert sorted((x.id, x.state) for x in store.list_alerts(limit=None)) == sorted(
        [(a.id, "resolved"), (b.id, "resolved")])


async def test_a_tick_checks_only_the_devices_whose_heartbeat_is_due(store, clock, sink) -> None:
    devs = [device(f"g-{i}", "flood", heartbeat_s=600 if i < 3 else 3600) for i in range(500)]
    eng = engine_for(["flood_device_silent"], store, sink, clock, devices=lambda: devs)
    checked: list[str] = []
    original = eng._absence_due

    async def counting(rule: Any, dev: DeviceInfo, now: int) -> None:
        checked.append(dev.device_id)
        await original(rule, dev, now)

    eng._absence_due = counting  # type: ignore[method-assign]
    await eng.start()
    for t in range(1, 10):  # ticks every minute for 9 minutes: nobody is due yet
        await eng.tick(T0 + minutes(t))
    assert checked == []
    await eng.tick(T0 + minutes(11))  # 10 min passed for the three short-heartbeat gauges only
    assert sorted(checked) == ["g-0", "g-1", "g-2"]
    assert sorted(d for _, d, s in sink.states if s == "firing") == ["g-0", "g-1", "g-2"]
    # g-0 reports again: resolved, and due again 10 minutes after that reading, not before
    await eng.process(reading(devs[0], T0 + minutes(12), level_m=1.0), devs[0])
    checked.clear()
    await eng.tick(T0 + minutes(21))
    assert checked == []
    await eng.tick(T0 + minutes(23))
    assert checked == ["g-0"]


async def test_a_device_added_or_changed_in_the_registry_is_watched_from_the_next_tick(store, clock, sink) -> None:
    listing = [device("g-1", "flood", heartbeat_s=600)]
    eng = engine_for(["flood_device_silent"], store, sink, clock, devices=lambda: listing)
    await eng.start()
    await eng.tick(T0 + minutes(1))
    listing.append(device("g-2", "flood", heartbeat_s=600))
    listing[0] = device("g-1", "flood", heartbeat_s=60)  # heartbeat shortened in the registry
    await eng.tick(T0 + minutes(2))
    await eng.tick(T0 + minutes(3))
    assert [d for _, d, s in sink.states if s == "firing"] == ["g-1"]
    await eng.tick(T0 + minutes(11))  # g-2's silence counts from its first listing (minute 2), not engine start
    assert [d for _, d, s in sink.states if s == "firing"] == ["g-1"]
    await eng.tick(T0 + minutes(13))
    assert sorted(d for _, d, s in sink.states if s == "firing") == ["g-1", "g-2"]


def test_a_summary_template_is_compiled_once() -> None:
    renderer = Renderer()
    compiled: list[str] = []
    original = renderer._summary_envs["en"].from_string

    def counting(source: str) -> Any:
        compiled.append(source)
        return original(source)

    renderer._summary_envs["en"].from_string = counting  # type: ignore[method-assign]
    texts = [renderer.render_summary("{{ value | num }} at {{ device.name }}", {"value": v, "device": {"name": "x"}})
             for v in (1.5, 2.0, 3.25)]
    assert texts == ["1.5 at x", "2 at x", "3.25 at x"]
    assert len(compiled) == 1


async def test_a_backlog_reading_older_than_a_tick_change_does_not_reorder_the_measurement(store, clock, sink) -> None:
    eng = engine_for(["flood_level_overbank"], store, sink, clock)
    dev = device("gauge-8", "flood")
    await eng.process(reading(dev, T0, level_pct_bank=104.0), dev)  # pending since T0 (`for: 2m`)
    await eng.tick(T0 + minutes(30))  # the wall clock is far ahead of the backlog: `for` ran out, firing
    # a queued reading from T0 + 1 min clears it; held by keep_firing_for (10 min), released by the next one
    await eng.process(reading(dev, T0 + minutes(1), level_pct_bank=90.0), dev)
    await eng.process(reading(dev, T0 + minutes(12), level_pct_bank=90.0), dev)
    (alert,) = store.list_alerts(limit=None)
    assert alert.state == "resolved" and alert.resolved_ns is not None and alert.fired_ns is not None
    assert alert.resolved_ns > alert.fired_ns  # never resolved before it fired
    assert [s for _, _, s in sink.states] == ["pending", "firing", "resolved"]
    assert last_state_per_alert(sink) == store_states(store)  # last point by time = the stored state


async def test_a_tick_during_a_backlog_judges_for_by_the_readings_not_the_wall_clock(store, clock, sink) -> None:
    """A backlog of past readings: the wall clock is an hour past the first of them. A tick while readings are
    still queued must not fire the pending alert because its `for: 5m` ran out against the clock (the queued
    readings clear it every 15 s): that would fire and notify, then resolve it, at every tick of a drain.
    Once the queue is empty, a tick judges by the clock again and fires what is still pending."""
    eng = engine_for(["flood_level_high"], store, sink, clock, batch_size=1, tick_interval_s=0.0001)
    dev = device("gauge-backlog", "flood")
    queue: asyncio.Queue[Any] = asyncio.Queue()
    step = 15 * NS
    for i in range(41):  # 75 % opens (pending), 60 % clears; the last one (75 %) stays pending
        queue.put_nowait((reading(dev, T0 + i * step, level_pct_bank=75.0 if i % 2 == 0 else 60.0), dev))
    clock.set(T0 + minutes(60))
    task = asyncio.create_task(eng.run(queue))
    try:
        await asyncio.wait_for(queue.join(), 30)
        ticks_seen = 0
        while "firing" not in [s for _, _, s in sink.states] and ticks_seen < 500:
            await asyncio.sleep(0.01)  # the queue is empty: the next tick judges by the clock
            ticks_seen += 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    states = [s for _, _, s in sink.states]
    assert states[:40] == ["pending", "resolved"] * 20  # nothing fired while the backlog drained
    assert states[40:] == ["pending", "firing"]  # then the clock: `for` has run out for the last one
    alert = store.get_open("flood_level_high", "gauge-backlog")
    assert alert is not None and alert.state == "firing" and alert.started_ns == T0 + 40 * step
    assert last_state_per_alert(sink) == store_states(store)


async def test_an_alert_resolved_and_opened_again_in_one_later_batch_is_not_lost(store, clock, sink) -> None:
    """The alert opened in one batch; the next batch holds its clearing reading and then a reading that opens it
    again (a device with several readings per batch, e.g. fewer devices than `batch_size`). The resolution
    frees the (rule, device) slot the new alert takes: written in the other order the new alert found the slot
    still taken, was dropped as another evaluator's, and the episode it opens was lost."""
    eng = engine_for(["flood_level_high"], store, sink, clock)
    dev = device("gauge-again", "flood")
    await eng.process_batch([(reading(dev, T0, level_pct_bank=75.0), dev)])
    await eng.process_batch([(reading(dev, T0 + minutes(1), level_pct_bank=60.0), dev),
                             (reading(dev, T0 + minutes(2), level_pct_bank=75.0), dev)])
    again = store.get_open("flood_level_high", "gauge-again")
    assert again is not None and again.state == "pending" and again.started_ns == T0 + minutes(2)
    assert eng.open_alert("flood_level_high", "gauge-again") == again
    assert [s for _, _, s in sink.states] == ["pending", "resolved", "pending"]
    assert last_state_per_alert(sink) == store_states(store)


async def test_a_batch_finding_the_database_locked_waits_in_a_thread_and_publishes_only_after_its_commit(
    tmp_path, clock, sink
) -> None:
    # The registry's diagnostics write to the same SQLite file: a batch tried on the loop's thread without waiting
    # must, when another writer holds the lock, write nothing there, wait for the lock in a thread (the loop keeps
    # running), and publish nothing before its commit.
    import sqlite3

    from rules.metrics import ALERT_BATCH_BUSY

    path = tmp_path / "alerts.db"
    store = AlertStore(f"sqlite:///{path}")
    pipeline, mem = make_pipeline(store, clock)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        eng = engine_for(["flood_level_overbank"], store, sink, clock, pipeline)
        await eng.start()
        busy_before = ALERT_BATCH_BUSY._value.get()
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        dev = device("gauge-9", "flood")
        task = asyncio.create_task(eng.process(reading(dev, T0, level_pct_bank=104.0), dev))
        ticks = 0
        for _ in range(20):  # the loop is not blocked while the batch waits for the lock
            await asyncio.sleep(0.02)
            ticks += 1
        assert not task.done()
        assert ALERT_BATCH_BUSY._value.get() == busy_before + 1
        assert sink.points == [] and mem["ops"].sent == []
        assert blocker.execute("SELECT count(*) FROM rules_alerts").fetchone() == (0,)
        blocker.execute("COMMIT")
        await asyncio.wait_for(task, 30)
        stored = store.get_open("flood_level_overbank", "gauge-9")
        assert stored is not None and [p.fields["alert_id"] for p in sink.points] == [stored.id]
        assert ticks == 20
    finally:
        blocker.close()
        await pipeline.stop()
        store.close()


def test_without_waiting_a_locked_database_refuses_at_once_writes_nothing_and_the_next_write_waits_again(
    tmp_path,
) -> None:
    import sqlite3
    import threading
    import time

    from rules.store import Alert, StoreBusyError

    path = tmp_path / "alerts.db"
    store = AlertStore(f"sqlite:///{path}")
    assert store.writes_without_waiting
    alert = Alert.opened(rule="r", device_id="d", city="c", district="x", feed="flood", severity="warning",
                         t_ns=T0, firing=False)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        t0 = time.monotonic()
        with store.without_waiting():
            try:
                store.apply_batch([AlertWrite(alert, insert=True)])
                raise AssertionError("a locked database must refuse the write")
            except StoreBusyError:
                pass
        assert time.monotonic() - t0 < 1.0  # at once, not after the 30 s busy timeout
        # outside `without_waiting` the same connection waits for the lock again (its busy timeout is restored)
        threading.Timer(0.5, lambda: blocker.execute("COMMIT")).start()
        t0 = time.monotonic()
        assert store.apply_batch([AlertWrite(alert, insert=True)]) == set()
        assert time.monotonic() - t0 >= 0.3
        assert [a.id for a in store.list_alerts(limit=None)] == [alert.id]  # written once, by the second call
    finally:
        blocker.close()
        store.close()


async def test_a_batch_commits_on_the_loop_thread_when_the_sqlite_file_is_free(tmp_path, clock, sink) -> None:
    import threading

    threads: list[int] = []

    class Recording(AlertStore):
        def apply_batch(self, writes: Any, candidates: Any = None) -> set[str]:
            threads.append(threading.get_ident())
            return super().apply_batch(writes, candidates)

    store = Recording(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        eng = engine_for(["flood_level_overbank"], store, sink, clock)
        dev = device("gauge-8", "flood")
        await eng.process(reading(dev, T0, level_pct_bank=104.0), dev)
        assert threads == [threading.get_ident()]
        assert store.get_open("flood_level_overbank", "gauge-8") is not None and len(sink.points) == 1
    finally:
        store.close()


# ---- the multi-row SQLite batch, time-ordered ids, the commit in the background (issue 11, fourth session) ----


def _opened(device_id: str, t_ns: int, rule: str = "r", **kw: Any) -> Any:
    from rules.store import Alert

    return Alert.opened(rule=rule, device_id=device_id, city="c", district="x", feed="flood", severity="warning",
                        t_ns=t_ns, firing=False, value=kw.pop("value", 1.5), threshold=1.0,
                        message_th=kw.pop("message_th", f"ระดับน้ำสูง \"{device_id}\" \\ 1.5 ม."),
                        message_en=f"High water at {device_id}", labels={"team": "flood", "zone": device_id[-1]})


def test_a_batch_larger_than_one_statement_stores_every_column_of_every_row(store) -> None:
    """Chunking: 1,000 openings and 900 state changes (more than one multi-row statement each); every stored
    row equals its snapshot, column by column, on SQLite and PostgreSQL alike."""
    first = [_opened(f"d{i:04d}", T0 + i) for i in range(900)]
    assert store.apply_batch([AlertWrite(a, insert=True) for a in first]) == set()
    changes = [a.fired(T0 + 10_000 + i, value=2.5, message_th=f"ไฟ {i}") if i % 2 else a.resolved(T0 + 10_000 + i, 0.2)
               for i, a in enumerate(first)]
    fresh = [_opened(f"e{i:04d}", T0 + 20_000 + i, rule="r2") for i in range(1_000)]
    writes = [AlertWrite(c, insert=False, expect="pending") for c in changes] + \
             [AlertWrite(a, insert=True) for a in fresh]
    assert store.apply_batch(writes) == set()
    stored = {a.id: a for a in store.list_alerts(limit=None)}
    assert len(stored) == 1_900
    for snapshot in [*changes, *fresh]:
        assert stored[snapshot.id] == snapshot
    # resolved ones freed their (rule, device) slot, the rest still hold theirs
    assert store.get_open("r", "d0000") is None and store.get_open("r", "d0001") == changes[1]


def test_an_opening_whose_slot_another_evaluator_holds_is_reported_and_the_rest_of_the_batch_is_stored(
    store,
) -> None:
    """A second evaluator opened (r, d1) first: the batch's own opening of it does not apply (and is not an
    error that loses the batch); the other openings are committed."""
    theirs, _ = store.open_alert(rule="r", device_id="d1", city="c", district="x", feed="flood",
                                 severity="warning", state="pending", t_ns=T0)
    mine = [_opened(d, T0 + 5) for d in ("d0", "d1", "d2")]
    failed = store.apply_batch([AlertWrite(a, insert=True) for a in mine])
    assert failed == {mine[1].id}
    assert store.get_open("r", "d1") == theirs
    assert {a.id for a in store.list_alerts(limit=None)} == {theirs.id, mine[0].id, mine[2].id}


def test_an_opening_resolved_within_its_batch_takes_no_slot_and_a_second_one_can_follow(store) -> None:
    """Open and resolve in one batch is one INSERT of the resolved row (open_key NULL); a second alert of
    the same (rule, device) opened in the same batch keeps the slot."""
    a = _opened("d9", T0)
    a_done = a.resolved(T0 + 1)
    b = _opened("d9", T0 + 2)
    assert store.apply_batch([AlertWrite(a_done, insert=True), AlertWrite(b, insert=True)]) == set()
    assert store.get(a.id) == a_done and store.get_open("r", "d9") == b


def test_alert_ids_are_unique_across_threads_and_ordered_by_creation_time() -> None:
    """A flapping storm opens an alert per reading: ids must never repeat, also when threads make them at
    the same nanosecond, and later ids sort after earlier ones (new rows go to the index's end)."""
    import threading
    import time

    from rules.store import new_alert_id

    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        for _ in range(20_000):
            out.append(new_alert_id())

    threads = [threading.Thread(target=make, args=(m,)) for m in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for m in made for i in m]
    assert len(set(every)) == 80_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in every)
    before = new_alert_id()
    time.sleep(0.002)
    assert new_alert_id() > before
    assert all(m == sorted(m) for m in made)  # per thread: made later, sorts later


class GatedStore(AlertStore):
    """`apply_batch` waits (in its thread) until the test opens the gate; records the order of commits."""

    def __init__(self, url: str) -> None:
        import threading

        super().__init__(url)
        self.gate = threading.Event()
        self.started = threading.Event()
        self.commits: list[int] = []
        self.running = 0
        self.overlapped = False

    def apply_batch(self, writes: Any, candidates: Any = None) -> set[str]:
        self.running += 1
        self.overlapped |= self.running > 1
        self.started.set()
        try:
            self.gate.wait(10)
            out = super().apply_batch(writes, candidates)
            self.commits.append(len(getattr(writes, "writes", writes)))
            return out
        finally:
            self.running -= 1


async def test_the_next_batch_is_evaluated_while_one_commits_but_nothing_is_published_before_its_commit(
    tmp_path, clock, sink
) -> None:
    """The engine's loop commits a batch in the background: meanwhile it evaluates the next one (its alert
    is already open in memory), but no point of either batch goes out, no reading is marked done, and the
    second commit starts only after the first ended (one transaction at a time, in order)."""
    store = GatedStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    eng = engine_for(["flood_level_overbank"], store, sink, clock, batch_size=1)
    queue: asyncio.Queue[tuple[Reading, DeviceInfo]] = asyncio.Queue(maxsize=10)
    first, second = device("g-first", "flood"), device("g-second", "flood")
    task = asyncio.create_task(eng.run(queue, tick_interval_s=3600))
    try:
        await queue.put((reading(first, T0, level_pct_bank=104.0), first))
        await asyncio.to_thread(store.started.wait, 10)  # the first batch's commit is running, held
        await queue.put((reading(second, T0, level_pct_bank=104.0), second))
        for _ in range(200):
            if eng.open_alert("flood_level_overbank", "g-second") is not None:
                break
            await asyncio.sleep(0.01)
        assert eng.open_alert("flood_level_overbank", "g-second") is not None  # evaluated meanwhile
        assert sink.points == [] and store.list_alerts(limit=None) == []
        assert queue._unfinished_tasks == 2  # type: ignore[attr-defined]  # neither reading is done
        store.gate.set()
        await asyncio.wait_for(queue.join(), 10)
        assert store.commits == [1, 1] and not store.overlapped
        assert [p.tags["device_id"] for p in sink.points] == ["g-first", "g-second"]
        assert last_state_per_alert(sink) == store_states(store)
    finally:
        store.gate.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()


async def test_stopping_the_loop_while_a_batch_commits_still_commits_publishes_and_marks_it_done(
    tmp_path, clock, sink
) -> None:
    """Shutdown at the worst moment: the loop is cancelled while its batch is in the background commit. The
    batch is still committed, its point handed over and its readings marked done (stop drains, loses none)."""
    store = GatedStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    eng = engine_for(["flood_level_overbank"], store, sink, clock)
    queue: asyncio.Queue[tuple[Reading, DeviceInfo]] = asyncio.Queue(maxsize=10)
    dev = device("g-stop", "flood")
    task = asyncio.create_task(eng.run(queue, tick_interval_s=3600))
    try:
        await queue.put((reading(dev, T0, level_pct_bank=104.0), dev))
        await asyncio.to_thread(store.started.wait, 10)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # waiting for the commit it started
        store.gate.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert queue._unfinished_tasks == 0  # type: ignore[attr-defined]
        stored = store.get_open("flood_level_overbank", "g-stop")
        assert stored is not None and [p.fields["alert_id"] for p in sink.points] == [stored.id]
    finally:
        store.gate.set()
        store.close()


async def test_a_background_commit_that_fails_publishes_nothing_and_the_next_reading_opens_what_is_stored(
    tmp_path, clock, sink
) -> None:
    """A crash between transition and commit, on the loop's background commit: nothing about the lost batch
    is published, its readings are still marked done (reported, not retried forever), and the engine forgets
    the uncommitted alert, so the next reading opens exactly what the store then holds."""
    store = FlakyStore(f"sqlite:///{tmp_path / 'alerts.db'}", failures=2)
    eng = engine_for(["flood_level_overbank"], store, sink, clock,
                     commit_policy=CommitPolicy(attempts=2, initial_backoff_s=0))
    eng.lifecycle._sleep = _no_sleep
    queue: asyncio.Queue[tuple[Reading, DeviceInfo]] = asyncio.Queue(maxsize=10)
    dev = device("g-lost", "flood")
    task = asyncio.create_task(eng.run(queue, tick_interval_s=3600))
    try:
        await queue.put((reading(dev, T0, level_pct_bank=104.0), dev))
        await asyncio.wait_for(queue.join(), 10)
        assert store.attempts == 2 and sink.points == [] and store.list_alerts(limit=None) == []
        assert eng.open_alert("flood_level_overbank", "g-lost") is None
        await queue.put((reading(dev, T0 + minutes(1), level_pct_bank=104.0), dev))
        await asyncio.wait_for(queue.join(), 10)
        stored = store.get_open("flood_level_overbank", "g-lost")
        assert stored is not None and eng.open_alert("flood_level_overbank", "g-lost") == stored
        assert last_state_per_alert(sink) == store_states(store)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
