"""The MQTT transport against a real Mosquitto: PUBACK only once the handler's outcome is durable, a bound on
what is in flight, intake held on request, and nothing acknowledged for a failed outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

from collectors.transport.mqtt import MqttEndpoint, MqttSubscriber
from tests.publishing import AckingPublisher
from tests.servers import MosquittoServer


async def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def test_puback_is_sent_only_when_the_outcome_resolves(tmp_path: Path) -> None:
    with MosquittoServer(tmp_path) as broker:
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        received: list[bytes] = []

        def handler(topic: str, payload: bytes, received_ns: int) -> asyncio.Future[None]:
            received.append(payload)
            return outcome  # every message joins one "batch"

        subscriber = MqttSubscriber(MqttEndpoint("127.0.0.1", broker.port), client_id="t-ack", topics=["t/#"],
                                    handler=handler)
        await subscriber.start()
        publisher = AckingPublisher(broker.port, client_id="t-ack-pub")
        for i in range(10):
            publisher.publish("t/x", f"m{i}".encode())
        assert await wait_until(lambda: len(received) == 10)
        await asyncio.sleep(0.3)
        assert subscriber.in_flight == 10  # nothing acknowledged while the outcome is pending
        outcome.set_result(None)
        assert await wait_until(lambda: subscriber.in_flight == 0)
        await subscriber.close()
        publisher.close()

        # Nothing is redelivered to the same session: the broker got our PUBACKs.
        again: list[bytes] = []
        resumed = MqttSubscriber(MqttEndpoint("127.0.0.1", broker.port), client_id="t-ack", topics=["t/#"],
                                 handler=lambda t, p, n: _resolved(again, p))
        await resumed.start()
        await asyncio.sleep(0.5)
        assert again == []
        await resumed.close()


def _resolved(sink: list[bytes], payload: bytes) -> asyncio.Future[None]:
    sink.append(payload)
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


async def test_unacknowledged_messages_are_redelivered_to_the_next_session(tmp_path: Path) -> None:
    with MosquittoServer(tmp_path) as broker:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        first: list[bytes] = []

        def hold(topic: str, payload: bytes, received_ns: int) -> asyncio.Future[None]:
            first.append(payload)
            return never

        subscriber = MqttSubscriber(MqttEndpoint("127.0.0.1", broker.port), client_id="t-redo", topics=["t/#"],
                                    handler=hold)
        await subscriber.start()
        publisher = AckingPublisher(broker.port, client_id="t-redo-pub")
        for i in range(5):
            publisher.publish("t/x", f"m{i}".encode())
        assert await wait_until(lambda: len(first) == 5)
        await subscriber.close(drain_timeout_s=0.2)  # gives up on the pending ones: they stay unacknowledged
        publisher.close()

        second: list[bytes] = []
        resumed = MqttSubscriber(MqttEndpoint("127.0.0.1", broker.port), client_id="t-redo", topics=["t/#"],
                                 handler=lambda t, p, n: _resolved(second, p))
        await resumed.start()
        assert await wait_until(lambda: len(second) == 5)
        assert sorted(second) == sorted(first)
        await resumed.close()


async def test_failed_outcome_is_not_acknowledged(tmp_path: Path) -> None:
    with MosquittoServer(tmp_path) as broker:
        seen: list[bytes] = []

        def fail(topic: str, payload: bytes, received_ns: int) -> asyncio.Future[None]:
            seen.append(payload)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(RuntimeError("disk full"))
            return future

        subscriber = MqttSubscriber(MqttEndpoint("127.0.0.1", broker.port), client_id="t-fail", topics=["t/#"],
                                    handler=fail)
        await subscriber.start()
        publisher = AckingPublisher(broker.port, client_id="t-fail-pub")
        publisher.publish("t/x", b"precious")
        assert await wait_until(lambda: len(seen) == 1)
        await subscriber.close()
        publisher.close()
        again: list[bytes] = []
        resumed = MqttSubscriber(MqttEndpoint("127.0.0.1", broker.port), client_id="t-fail", topics=["t/#"],
                                 handler=lambda t, p, n: _resolved(again, p))
        await resumed.start()
        assert await wait_until(lambda: again == [b"precious"])
        await resumed.close()


async def test_in_flight_is_bounded_and_intake_can_be_held(tmp_path: Path) -> None:
    with MosquittoServer(tmp_path) as broker:
        pending: list[asyncio.Future[None]] = []

        def hold(topic: str, payload: bytes, received_ns: int) -> asyncio.Future[None]:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            pending.append(future)
            return future

        subscriber = MqttSubscriber(MqttEndpoint("127.0.0.1", broker.port), client_id="t-bound", topics=["t/#"],
                                    handler=hold, receive_maximum=500)
        await subscriber.start()
        publisher = AckingPublisher(broker.port, client_id="t-bound-pub")
        await asyncio.to_thread(publisher.publish_many, ((f"t/{i % 7}", b"x" * 40) for i in range(20_000)))
        await asyncio.sleep(1.0)
        # Bounded: the limit plus what had already been read from the socket when reading stopped — asyncio
        # hands over up to a few 64 KiB chunks (~1,000 of these small messages each) before the pause bites.
        bound = 500 + 4_000
        assert 500 <= len(pending) <= bound
        assert subscriber.paused
        first = len(pending)
        for future in list(pending):
            future.set_result(None)
        # acks freed room: reading resumed, and stopped again at the limit
        assert await wait_until(lambda: len(pending) > first and subscriber.paused)
        assert subscriber.in_flight <= bound

        subscriber.hold("test")
        await asyncio.sleep(0.2)
        for future in pending:
            if not future.done():
                future.set_result(None)
        held_at = len(pending)
        await asyncio.sleep(0.5)
        assert len(pending) <= held_at + 4_000  # at most what was already buffered
        settled = len(pending)
        await asyncio.sleep(0.3)
        assert len(pending) == settled  # and then nothing while held
        subscriber.release("test")
        assert await wait_until(lambda: len(pending) > settled)
        publisher.close()
        for future in pending:
            if not future.done():
                future.set_result(None)
        await subscriber.close()
