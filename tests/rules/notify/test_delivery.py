"""The send-with-retry stage: backoff to a cap (per receiver), retry while the message matters, permanent failures
stop at once, the route's fallback receiver after a failing time, failing receivers visible."""

from __future__ import annotations

from prometheus_client import REGISTRY

from rules.notify.base import PermanentNotifyError, RetryableNotifyError
from rules.notify.memory import MemoryNotifier
from rules.notify.retry import RetryPolicy
from rules.notify.routing import parse_routing
from rules.timeutil import FakeClock
from tests.rules.conftest import T0
from tests.rules.notify.test_pipeline import fire

ROUTING = """
receivers:
  - {name: line, retry: {initial: 1s, max: 8s}}
  - {name: email}
route:
  receiver: line
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 10m
  fallback: {receiver: email, after: 30s}
"""


class FakeSleep:
    """Records the waits and moves the fake clock on by them (a long outage in no time)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


def failing(n: int, name: str = "line") -> MemoryNotifier:
    return MemoryNotifier(name, fail=[RetryableNotifyError("HTTP 503")] * n)


def test_backoff_doubles_from_the_initial_interval_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=1, max_backoff_s=8)
    assert [policy.backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 8, 8, 8]
    assert policy.backoff(10_000) == 8  # no overflow after days of failing
    assert not policy.gave_up(10_000)  # no attempt limit unless an embedder sets one


def test_a_receivers_own_intervals_override_the_service_default() -> None:
    rc = parse_routing(ROUTING).receiver("line")
    policy = RetryPolicy(initial_backoff_s=2, max_backoff_s=300).with_intervals(rc.retry.initial, rc.retry.max)
    assert (policy.initial_backoff_s, policy.max_backoff_s) == (1.0, 8.0)
    email = parse_routing(ROUTING).receiver("email")
    assert RetryPolicy().with_intervals(email.retry.initial, email.retry.max) == RetryPolicy()


async def test_a_long_outage_is_retried_at_the_cap_until_accepted(store, clock, pipeline_factory) -> None:
    sleep = FakeSleep(clock)
    line, email = failing(12), MemoryNotifier("email")
    routing = ROUTING.replace("fallback: {receiver: email, after: 30s}", "")
    pipe, _ = pipeline_factory(routing, notifiers={"line": line, "email": email}, sleep=sleep)
    await pipe.submit(fire(store, "r", "d-1", "air", T0, "critical"))
    await pipe.drain()
    assert line.attempts == 13 and len(line.sent) == 1  # 12 failures (≈ 70 s of outage), then accepted
    assert sleep.waits == [1, 2, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8]
    [note] = store.list_notifications()
    assert (note.outcome, note.attempts, note.error) == ("sent", 13, None)
    await pipe.stop()


async def test_a_permanent_failure_stops_at_once_with_its_code(store, clock, pipeline_factory) -> None:
    sleep = FakeSleep(clock)
    line = MemoryNotifier("line", fail=[PermanentNotifyError("HTTP 404 no such hook")])
    pipe, _ = pipeline_factory(ROUTING, notifiers={"line": line, "email": MemoryNotifier("email")}, sleep=sleep)
    await pipe.submit(fire(store, "r", "d-1", "air", T0))
    await pipe.drain()
    assert line.attempts == 1 and sleep.waits == []
    [note] = store.list_notifications(failed=True)
    assert note.attempts == 1 and note.error == "permanent: HTTP 404 no such hook"
    await pipe.stop()


async def test_a_reminder_acknowledged_during_the_outage_is_not_sent_afterwards(store, clock, pipeline_factory) -> None:
    line = MemoryNotifier("line")
    routing = ROUTING.replace("fallback: {receiver: email, after: 30s}", "")
    pipe, _ = pipeline_factory(routing, notifiers={"line": line, "email": MemoryNotifier("email")})
    a = fire(store, "r", "d-1", "air", T0, "critical")
    await pipe.submit(a)
    await pipe.drain()
    line.fail_next(*[RetryableNotifyError("HTTP 502")] * 3)
    acked = False

    async def ack_during_outage(seconds: float) -> None:
        nonlocal acked
        if not acked:
            store.ack(a.id, "somchai", "กำลังไป", clock.now_ns())
            acked = True

    for worker in pipe.workers.values():
        worker._sleep = ack_during_outage
    clock.advance(600)
    await pipe.tick()  # the reminder at 10 min; its first attempt fails, then it is acknowledged
    await pipe.drain()
    assert [m.kind for m in line.sent] == ["firing"]
    assert [n.outcome for n in store.list_notifications() if n.kind.startswith("reminder")] == ["expired"]
    await pipe.stop()


async def test_after_failing_for_the_fallback_time_the_fallback_receiver_is_told_once(
    store, clock, pipeline_factory
) -> None:
    sleep = FakeSleep(clock)
    line, email = failing(10), MemoryNotifier("email")
    pipe, _ = pipeline_factory(ROUTING, notifiers={"line": line, "email": email}, sleep=sleep)
    a = fire(store, "flood_level_overbank", "g-1", "flood", T0, "critical")
    await pipe.submit(a)
    await pipe.drain()
    assert [m.alert_ids for m in email.sent] == [[a.id]]  # once, though line kept failing well past 30 s
    assert email.sent[0].receiver == "email" and email.sent[0].payload["receiver"] == "email"  # made for it
    assert len(line.sent) == 1  # and the first receiver still got it when it came back
    await pipe.stop()


async def test_a_failing_receiver_shows_in_the_metric_and_health_until_it_recovers(
    store, clock, pipeline_factory
) -> None:
    line = failing(2)
    seen: list[tuple[float | None, list[str]]] = []
    pipe, _ = pipeline_factory(ROUTING, notifiers={"line": line, "email": MemoryNotifier("email")})

    async def look(_seconds: float) -> None:
        value = REGISTRY.get_sample_value("nakhon_notifications_failing", {"receiver": "line"})
        seen.append((value, pipe.health()["failing_receivers"]))

    await pipe.start()
    for worker in pipe.workers.values():
        worker._sleep = look
    await pipe.submit(fire(store, "r", "d-1", "air", T0))
    await pipe.drain()
    assert seen == [(1.0, ["line"]), (1.0, ["line"])]
    assert REGISTRY.get_sample_value("nakhon_notifications_failing", {"receiver": "line"}) == 0.0
    health = pipe.health()
    assert health["ok"] is True and health["failing_receivers"] == []
    await pipe.stop()
