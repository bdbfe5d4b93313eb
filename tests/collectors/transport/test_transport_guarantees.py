"""The transport's guarantees, driven through the client seam with the in-process fake broker (no socket):
acknowledge only after the sink's durable OK, reconnect forever with backoff after refusals and losses,
resubscribe and count a lost session, never acknowledge what shutdown will not process, bounded in flight.
The same guarantees against a real Mosquitto: tests/collectors/transport/test_transport.py and tests/faults/."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from collectors.transport.fake import FakeBroker, topic_matches
from collectors.transport.mqtt import Backoff, MqttEndpoint, MqttSubscriber


class Sink:
    """The handler: each message gets its own pending outcome, resolved (durable OK) or failed by the test."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.outcomes: list[asyncio.Future[None]] = []

    def handler(self, topic: str, payload: bytes, received_ns: int) -> asyncio.Future[None]:
        self.received.append((topic, payload))
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.outcomes.append(outcome)
        return outcome

    def store(self, *indexes: int) -> None:
        for i in indexes or range(len(self.outcomes)):
            if not self.outcomes[i].done():
                self.outcomes[i].set_result(None)

    @property
    def payloads(self) -> list[bytes]:
        return [payload for _, payload in self.received]


def make(broker: FakeBroker, sink: Sink, **options: Any) -> MqttSubscriber:
    options = {"reconnect_delay_s": 0.001, "reconnect_max_delay_s": 0.004, **options}
    return MqttSubscriber(MqttEndpoint("fake", 1883, "collectors", "secret"), client_id="c1", topics=["t/#"],
                          handler=sink.handler, client_factory=broker.client, **options)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def settle() -> None:
    for _ in range(20):  # let call_soon deliveries and done callbacks run
        await asyncio.sleep(0)


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def publish(broker: FakeBroker, n: int, prefix: str = "m", **options: Any) -> list[bytes]:
    payloads = [f"{prefix}{i}".encode() for i in range(n)]
    for payload in payloads:
        broker.publish("t/x", payload, **options)
    return payloads


# -- acknowledge only after the durable OK ---------------------------------------------------------------------

async def test_no_puback_before_the_sinks_durable_ok_and_one_per_message_after() -> None:
    broker, sink = FakeBroker(), Sink()
    async with make(broker, sink) as sub:
        publish(broker, 5)
        await until(lambda: len(sink.received) == 5)
        await settle()
        assert "PUBACK" not in broker.kinds() and sub.in_flight == 5
        sink.store(1, 3)
        await settle()
        assert [m.payload for m in broker.acked] == [b"m1", b"m3"] and sub.in_flight == 3
        sink.store()
        await settle()
        assert sorted(m.payload for m in broker.acked) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        assert broker.stray_acks == [] and sub.in_flight == 0


async def test_a_failed_outcome_is_never_acknowledged_and_comes_back_on_the_next_connection() -> None:
    broker, sink = FakeBroker(), Sink()
    async with make(broker, sink):
        publish(broker, 2)
        await until(lambda: len(sink.received) == 2)
        sink.outcomes[0].set_exception(OSError("spool write failed"))
        sink.outcomes[1].cancel()
        await settle()
        assert broker.acked == [] and len(broker.unacked) == 2
        broker.drop()
        await until(lambda: len(sink.received) == 4)  # redelivered after the reconnect, same packet ids
        sink.store(2, 3)
        await settle()
        assert sorted(m.payload for m in broker.acked) == [b"m0", b"m1"] and broker.unacked == []


async def test_an_outcome_resolved_after_a_reconnect_is_not_acknowledged_on_the_new_connection() -> None:
    broker, sink = FakeBroker(), Sink()
    async with make(broker, sink) as sub:
        publish(broker, 1)
        await until(lambda: len(sink.received) == 1)
        broker.drop()
        await until(lambda: len(sink.received) == 2 and sub.generation == 2)  # the redelivered copy
        sink.store(0)  # the first copy's outcome: its packet id belonged to the old connection
        await settle()
        assert broker.acked == []
        sink.store(1)
        await settle()
        assert [m.payload for m in broker.acked] == [b"m0"] and broker.stray_acks == []


async def test_qos0_messages_count_in_flight_but_are_never_acknowledged() -> None:
    broker, sink = FakeBroker(), Sink()
    async with make(broker, sink) as sub:
        publish(broker, 3, qos=0)
        await until(lambda: len(sink.received) == 3)
        assert sub.in_flight == 3
        sink.store()
        await settle()
        assert sub.in_flight == 0 and "PUBACK" not in broker.kinds()


# -- reconnect forever, with backoff ---------------------------------------------------------------------------

async def test_connack_0x87_refusals_then_accepted_connects_and_counts_each_refusal() -> None:
    broker, sink = FakeBroker(), Sink()
    broker.refuse(0x87, times=4)
    before = metric("nakhon_mqtt_connect_refused_total", {"code": "0x87"})
    sub = make(broker, sink)
    await sub.start(connect_timeout_s=5)
    try:
        assert broker.kinds()[:5] == ["CONNECT"] * 5 and sub.connected and sub.reason is None
        assert metric("nakhon_mqtt_connect_refused_total", {"code": "0x87"}) == before + 4
        assert all(c.abandoned for c in broker.clients[:4])  # a refused attempt never reconnects by itself
        publish(broker, 1)
        await until(lambda: len(sink.received) == 1)
        sink.store()
    finally:
        await sub.close()


async def test_refused_after_a_loss_keeps_retrying_says_why_and_then_resumes_the_session() -> None:
    broker, sink = FakeBroker(), Sink()
    async with make(broker, sink, reconnect_delay_s=0.01, reconnect_max_delay_s=0.02) as sub:
        publish(broker, 1, "before")
        await until(lambda: len(sink.received) == 1)
        sink.store()
        await settle()
        broker.refuse(0x87, times=1000)  # "permanent" to gmqtt: the supervisor must not give up
        broker.drop()
        await until(lambda: broker.kinds().count("CONNECT") >= 20)
        assert not sub.connected and sub.health()["reason"] == "connect_refused"
        assert "0x87" in (sub.last_error or "") or "135" in (sub.last_error or "")
        assert "secret" not in (sub.last_error or "")  # the detail names the broker, never the password
        publish(broker, 3, "while-refused")  # kept in the session meanwhile
        broker.accept()  # the operator fixes the account
        await until(lambda: sub.connected)
        await until(lambda: len(sink.received) == 4)
        assert sink.payloads[1:] == [b"while-refused0", b"while-refused1", b"while-refused2"]
        sink.store()
        assert sub.sessions_lost == 0


async def test_unreachable_broker_is_retried_and_healthz_says_unreachable() -> None:
    broker, sink = FakeBroker(), Sink()
    broker.unreachable(times=3)
    sub = make(broker, sink)
    reasons: list[Any] = []
    starting = asyncio.create_task(sub.start())
    await until(lambda: broker.kinds().count("CONNECT") >= 2)
    reasons.append(sub.health()["reason"])
    await starting
    assert reasons == ["unreachable"] and sub.connected
    await sub.close()


async def test_start_with_a_timeout_gives_up_with_the_reason_but_never_by_itself() -> None:
    broker, sink = FakeBroker(), Sink()
    broker.refuse(0x87, times=10_000)
    sub = make(broker, sink)
    with pytest.raises(ConnectionError, match="cannot connect to fake:1883"):
        await sub.start(connect_timeout_s=0.05)
    assert broker.kinds().count("CONNECT") > 3
    await sub.close()


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(1.0, 8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0.8 * nominal <= delay <= 1.2 * nominal
    backoff.reset()
    assert 0.8 <= backoff.next_delay() <= 1.2


async def test_a_takeover_is_reported_and_counted() -> None:
    broker, sink = FakeBroker(), Sink()
    async with make(broker, sink) as sub:
        broker.drop(0x8E)
        assert sub.health()["reason"] == "session_taken_over" and sub.takeovers == 1
        await until(lambda: sub.connected)


async def test_a_keepalive_loss_is_told_apart_from_the_broker_closing() -> None:
    broker, sink = FakeBroker(), Sink()
    async with make(broker, sink) as sub:
        broker.drop(keepalive_expired=True)
        assert sub.reason == "keepalive_timeout"
        await until(lambda: sub.connected)
        broker.drop()
        assert sub.reason == "closed_by_broker"
        await until(lambda: sub.connected and sub.generation == 3)


# -- a lost session --------------------------------------------------------------------------------------------

async def test_no_session_on_reconnect_resubscribes_at_once_logs_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    broker, sink = FakeBroker(), Sink()
    before = metric("nakhon_mqtt_session_lost_total")
    async with make(broker, sink) as sub:
        assert broker.session_subscriptions == {"t/#"} and sub.session_present is False and sub.sessions_lost == 0
        broker.lose_session()  # the broker restarted without its persistence
        broker.drop()
        await until(lambda: sub.generation == 2)
        assert sub.session_present is False and sub.sessions_lost == 1
        assert metric("nakhon_mqtt_session_lost_total") == before + 1
        assert "broker lost our session" in caplog.text
        assert broker.session_subscriptions == {"t/#"}  # subscribed again on the same connection
        publish(broker, 1)
        await until(lambda: len(sink.received) == 1)
        sink.store()


async def test_a_first_connection_without_a_marker_is_not_a_lost_session(tmp_path: Path) -> None:
    broker, sink = FakeBroker(), Sink()
    marker = tmp_path / "mqtt-session"
    async with make(broker, sink, session_marker=marker) as sub:
        assert sub.sessions_lost == 0 and marker.exists()
    broker.lose_session()
    async with make(broker, sink, session_marker=marker) as again:  # a restart that finds no session
        assert again.sessions_lost == 1


# -- retained messages -----------------------------------------------------------------------------------------

async def test_retained_messages_only_for_a_new_subscription_not_on_reconnect_or_restart() -> None:
    broker, sink = FakeBroker(), Sink()
    broker.publish("t/r", b"retained", retain=True)
    async with make(broker, sink) as sub:
        await until(lambda: len(sink.received) == 1)
        assert ("SUBSCRIBE", (("t/#",), 1)) in broker.packets  # MQTT 5 retain handling 1
        sink.store()
        await settle()
        assert broker.unacked == []
        broker.drop()
        await until(lambda: sub.generation == 2)
        await settle()
    async with make(broker, sink):
        await settle()
    assert sink.payloads == [b"retained"]
    broker.lose_session()  # with the session gone the subscription is new again: once more (at-least-once)
    async with make(broker, sink):
        await until(lambda: len(sink.received) == 2)
        sink.store()


# -- held intake and the bound on what is in flight ------------------------------------------------------------

async def test_in_flight_never_exceeds_the_bound_and_reading_resumes_at_half() -> None:
    broker, sink = FakeBroker(), Sink()
    async with make(broker, sink, receive_maximum=10) as sub:
        publish(broker, 50)
        await until(lambda: len(sink.received) == 10)
        await settle()
        assert len(sink.received) == 10 and sub.paused and sub.in_flight == 10
        sub.hold("spool_full")
        sub.release("spool_full")  # a release does not lift the bound
        publish(broker, 1, "read-ahead", already_read=True)  # handled although paused: it must not unpause
        await settle()
        assert len(sink.received) == 11 and sub.paused
        sink.store(10)
        sink.store(*range(4))  # 6 left in flight: above half, still paused
        await settle()
        assert len(sink.received) == 11 and sub.paused
        sink.store(4)  # 5 in flight: half, reading resumes until the bound again
        await until(lambda: len(sink.received) == 16)
        await settle()
        assert len(sink.received) == 16 and sub.in_flight == 10
        while len(sink.received) < 51:
            assert sub.in_flight <= 10
            sink.store()
            await settle()
        sink.store()
        await settle()
        assert len(broker.acked) == 51 and sub.in_flight == 0 and not sub.paused


async def test_held_intake_reads_nothing_until_every_hold_is_released() -> None:
    broker, sink = FakeBroker(), Sink()
    async with make(broker, sink) as sub:
        for reason in ("rules_queue_full", "spool_full"):
            sub.hold(reason)
        publish(broker, 5)
        for reason, expected in (("spool_full", 0), ("rules_queue_full", 5)):
            sub.release(reason)
            await settle()
            assert len(sink.received) == expected and sub.paused is (expected == 0)
        sink.store()


# -- shutdown ------------------------------------------------------------------------------------------------

async def test_close_acks_what_it_took_then_disconnects_and_takes_nothing_more() -> None:
    broker, sink = FakeBroker(), Sink()
    sub = make(broker, sink)
    await sub.start()
    publish(broker, 3, "taken")
    await until(lambda: len(sink.received) == 3)
    closing = asyncio.create_task(sub.close(drain_timeout_s=5))  # SIGTERM
    await settle()
    publish(broker, 2, "after-sigterm", already_read=True)  # read from the socket before the pause
    publish(broker, 2, "after-sigterm-queued")  # the broker keeps sending: nothing of it may be taken
    await settle()
    assert len(sink.received) == 3 and "DISCONNECT" not in broker.kinds()
    sink.store()  # the sink's last flush
    await closing
    kinds = broker.kinds()
    assert kinds[-1] == "DISCONNECT" and kinds.count("PUBACK") == 3
    assert kinds.index("DISCONNECT") > max(i for i, k in enumerate(kinds) if k == "PUBACK")
    left = [b"after-sigterm0", b"after-sigterm1", b"after-sigterm-queued0", b"after-sigterm-queued1"]
    assert [m.payload for m in broker.unacked] == left
    assert "CLOSE" not in kinds and not sub.connected

    again = Sink()  # the next start gets exactly what was not acknowledged
    async with make(broker, again):
        await until(lambda: len(again.received) == 4)
        again.store()
    assert again.payloads == left


async def test_close_with_an_outcome_that_never_comes_acks_nothing_of_it_and_still_disconnects() -> None:
    broker, sink = FakeBroker(), Sink()
    sub = make(broker, sink)
    await sub.start()
    publish(broker, 2)
    await until(lambda: len(sink.received) == 2)
    sink.store(0)
    await sub.close(drain_timeout_s=0.05)
    assert broker.kinds()[-2:] == ["PUBACK", "DISCONNECT"] and [m.payload for m in broker.unacked] == [b"m1"]
    sink.store(1)  # too late: the connection is gone
    await settle()
    assert broker.stray_acks == [] and [m.payload for m in broker.acked] == [b"m0"]


async def test_close_while_disconnected_stops_retrying() -> None:
    broker, sink = FakeBroker(), Sink()
    sub = make(broker, sink)
    await sub.start()
    broker.refuse(0x87, times=10_000)
    broker.drop()
    await until(lambda: broker.kinds().count("CONNECT") >= 5)
    await sub.close()
    attempts = broker.kinds().count("CONNECT")
    await asyncio.sleep(0.05)
    assert broker.kinds().count("CONNECT") == attempts and "DISCONNECT" not in broker.kinds()


def test_the_fakes_topic_filters_match_like_mqtt() -> None:
    assert topic_matches("t/#", "t/x/y") and topic_matches("t/+/y", "t/x/y") and topic_matches("t/x", "t/x")
    assert not topic_matches("t/+", "t/x/y") and not topic_matches("u/#", "t/x") and not topic_matches("t/x/y", "t/x")


def test_the_seams_protocol_levels_are_the_ones_gmqtt_sends() -> None:
    from gmqtt.mqtt import constants

    from collectors.transport.client import MQTTv50, MQTTv311

    assert (MQTTv50, MQTTv311) == (constants.MQTTv50, constants.MQTTv311) == (5, 4)
