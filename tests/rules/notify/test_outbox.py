"""The durable outbox and the dedup stage: owed before the attempt, sent only after acceptance, resumed oldest
first after a restart, never a second send of one that completed, never a resolve without its firing."""

from __future__ import annotations

import asyncio

from rules.notify.base import NotifyMessage, PermanentNotifyError, RetryableNotifyError
from rules.notify.memory import MemoryNotifier
from rules.notify.outbox import Outbox
from rules.store import AlertStore
from tests.rules.conftest import T0, minutes
from tests.rules.notify.test_pipeline import fire

ONE_RECEIVER = """
receivers:
  - {name: ops}
route:
  receiver: ops
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 0s
"""

TWO_RECEIVERS = """
receivers:
  - {name: ops}
  - {name: line}
route:
  receiver: ops
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 0s
  routes:
    - {match: {feed: flood}, receiver: ops, continue: true}
    - {match: {feed: flood}, receiver: line}
"""


class Inspecting(MemoryNotifier):
    """Looks at the outbox while the receiver is being sent to."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__("ops")
        self.outbox = outbox
        self.states_during_send: list[str | None] = []

    async def send(self, message: NotifyMessage) -> None:
        self.states_during_send.append(await asyncio.to_thread(self.outbox.state, message.message_id))
        await super().send(message)


class Stalled(MemoryNotifier):
    """A receiver that never answers (the process is killed while it waits)."""

    async def send(self, message: NotifyMessage) -> None:
        self.attempts += 1
        await asyncio.Event().wait()


async def test_owed_is_recorded_before_the_attempt_and_sent_only_after_acceptance(
    store: AlertStore, clock, pipeline_factory
) -> None:
    outbox = Outbox(store.engine)
    ops = Inspecting(outbox)
    ops.fail_next(RetryableNotifyError("503"))
    pipe, _ = pipeline_factory(ONE_RECEIVER, notifiers={"ops": ops})
    await pipe.submit(fire(store, "r", "d-1", "air", T0))
    await pipe.drain()
    assert ops.states_during_send == ["owed", "owed"]  # both attempts: written down before trying
    assert len(ops.sent) == 1
    assert outbox.state(ops.sent[0].message_id) == "sent"
    [note] = store.list_notifications()
    assert (note.outcome, note.attempts) == ("sent", 2)
    await pipe.stop()


async def test_a_crash_with_messages_owed_resumes_every_one_oldest_first(store, clock, pipeline_factory) -> None:
    stalled = Stalled("ops")
    first, _ = pipeline_factory(ONE_RECEIVER, notifiers={"ops": stalled})
    alerts = [fire(store, "r", f"d-{i}", "air", T0) for i in range(3)]
    for a in alerts:
        await first.submit(a)
    while stalled.attempts == 0:
        await asyncio.sleep(0.01)
    await first.stop()  # like a kill: the first is in flight, two queued behind it; nothing was recorded sent
    assert {n.outcome for n in store.list_notifications()} == {"queued"}

    ops = MemoryNotifier("ops")
    second, _ = pipeline_factory(ONE_RECEIVER, notifiers={"ops": ops})
    await second.restore(store.open_alerts())
    await second.drain()
    assert [m.alert_ids for m in ops.sent] == [[a.id] for a in alerts]  # each once, oldest first
    assert {n.outcome for n in store.list_notifications()} == {"sent"}
    await second.stop()


async def test_a_completed_notification_is_not_sent_again_after_restart(store, clock, pipeline_factory) -> None:
    first, mem1 = pipeline_factory(ONE_RECEIVER)
    a = fire(store, "r", "d-1", "air", T0)
    await first.submit(a)
    await first.drain()
    await first.stop()
    second, mem2 = pipeline_factory(ONE_RECEIVER)
    await second.restore(store.open_alerts())
    clock.advance(600)
    await second.tick()
    await second.drain()
    assert len(mem1["ops"].sent) == 1 and mem2["ops"].sent == []
    await second.stop()


async def test_a_resolve_goes_only_to_receivers_that_got_the_firing(store, clock, pipeline_factory) -> None:
    ops = MemoryNotifier("ops", fail=[PermanentNotifyError("HTTP 401")])
    line = MemoryNotifier("line")
    pipe, _ = pipeline_factory(TWO_RECEIVERS, notifiers={"ops": ops, "line": line})
    a = fire(store, "flood_level_high", "g-1", "flood", T0)
    await pipe.submit(a)
    await pipe.drain()
    clock.advance(120)
    await pipe.submit(store.resolve(a.id, clock.now_ns()))  # type: ignore[arg-type]
    await pipe.drain()
    assert ops.sent == []  # its firing failed: no resolve either
    assert [m.kind for m in line.sent] == ["firing", "resolved"]
    await pipe.stop()


async def test_a_resolve_owed_behind_its_undelivered_firing_follows_it(store, clock, pipeline_factory) -> None:
    """Receiver down while the alert fires and resolves: after the outage, the firing, then the resolve."""
    ops = MemoryNotifier("ops", fail=[RetryableNotifyError("connection refused")] * 3)
    pipe, _ = pipeline_factory(ONE_RECEIVER, notifiers={"ops": ops})
    a = fire(store, "r", "d-1", "air", T0)
    await pipe.submit(a)
    clock.advance(120)
    await pipe.submit(store.resolve(a.id, clock.now_ns()))  # type: ignore[arg-type]
    await pipe.drain()
    assert [m.kind for m in ops.sent] == ["firing", "resolved"]
    await pipe.stop()


async def test_a_resolve_still_in_a_group_at_a_crash_is_sent_after_restart(store, clock, pipeline_factory) -> None:
    first, mem1 = pipeline_factory(ONE_RECEIVER)
    a = fire(store, "r", "d-1", "air", T0)
    await first.submit(a)
    await first.drain()
    clock.advance(10)  # within group_interval (1m): the resolve waits in the group's memory
    await first.submit(store.resolve(a.id, clock.now_ns()))  # type: ignore[arg-type]
    await first.drain()
    assert [m.kind for m in mem1["ops"].sent] == ["firing"]
    await first.stop()  # crash: the group's memory is gone

    second, mem2 = pipeline_factory(ONE_RECEIVER)
    await second.restore(store.open_alerts())
    clock.advance(minutes(2) / 1e9)
    await second.tick()
    await second.drain()
    assert [m.kind for m in mem2["ops"].sent] == ["resolved"]
    await second.stop()


async def test_two_processes_on_one_database_send_an_owed_message_once(store, clock, pipeline_factory) -> None:
    """Engines partitioned over one database: each pipeline's worker sees the owed message; the lease lets one send."""
    slow_a, slow_b = MemoryNotifier("ops", delay_s=0.3), MemoryNotifier("ops", delay_s=0.3)
    a, _ = pipeline_factory(ONE_RECEIVER, notifiers={"ops": slow_a})
    b, _ = pipeline_factory(ONE_RECEIVER, notifiers={"ops": slow_b})
    b.outbox.owner = "another-process"
    await a.start()
    await b.start()
    await a.submit(fire(store, "r", "d-1", "air", T0))
    b.workers["ops"].wake()  # b looks at the outbox at the same moment
    await a.drain()
    await b.drain()
    assert len(slow_a.sent) + len(slow_b.sent) == 1
    await a.stop()
    await b.stop()
