"""MQTT faults on a real Mosquitto: a refused account, a stolen session, a broker that lost its session, intake
held past the keepalive, retained readings across restarts, and a clean shutdown under load. Each checks
message by message that everything the broker acknowledged to the publisher reached the handler, once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import REGISTRY

from collectors.transport.mqtt import MqttEndpoint, MqttSubscriber
from tests.faults.mqtt_helpers import Recorder, durable_broker, messages, password_broker, set_accounts, wait_until
from tests.publishing import AckingPublisher


def subscriber(port: int, recorder: Recorder, client_id: str, *, username: str | None = None,
               password: str | None = None, **options: Any) -> MqttSubscriber:
    options = {"reconnect_delay_s": 0.2, "reconnect_max_delay_s": 1.0, **options}
    return MqttSubscriber(MqttEndpoint("127.0.0.1", port, username, password), client_id=client_id, topics=["t/#"],
                          handler=recorder.handler, **options)


def refused(code: str) -> float:
    return REGISTRY.get_sample_value("nakhon_mqtt_connect_refused_total", {"code": code}) or 0.0


async def publish(port: int, batch: list[tuple[str, bytes]], **account: str) -> list[bytes]:
    publisher = AckingPublisher(port, client_id=f"faults-pub-{id(batch)}", **account)
    try:
        await asyncio.to_thread(publisher.publish_many, batch)
        assert await asyncio.to_thread(publisher.wait_all_acked, 30)
        return list(publisher.acked)
    finally:
        publisher.close()


async def test_account_refused_for_a_while_then_accepted_reconnects_and_loses_nothing(broker_workdir: Path) -> None:
    accounts = {"collectors": "c-secret", "pub": "p-secret"}
    pub = {"username": "pub", "password": "p-secret"}
    recorder = Recorder()
    with password_broker(broker_workdir, accounts) as broker:
        sub = subscriber(broker.port, recorder, "faults-refused", username="collectors", password="c-secret")
        await sub.start(connect_timeout_s=10)
        acked = await publish(broker.port, messages("before", 200), **pub)
        assert await wait_until(lambda: len(recorder.deliveries) == 200)

        broker.stop()  # restarted refusing the collectors' account (CONNACK 0x87: gmqtt calls it permanent)
        set_accounts(broker, {"collectors": "rotated-elsewhere", "pub": "p-secret"})
        base = refused("0x87")
        broker.start()
        acked += await publish(broker.port, messages("refused", 300), **pub)  # queued in the collectors' session
        assert await wait_until(lambda: refused("0x87") >= base + 3)  # still retrying after "permanent" refusals
        assert sub.health()["reason"] == "connect_refused" and not sub.connected

        broker.stop()
        set_accounts(broker, accounts)  # the operator fixes the account
        broker.start()
        assert await wait_until(lambda: sub.connected)
        acked += await publish(broker.port, messages("after", 200), **pub)
        assert await wait_until(lambda: set(recorder.deliveries) >= set(acked))
        await sub.close()
    assert len(acked) == 700
    assert set(recorder.deliveries) == set(acked)
    assert recorder.duplicates == {}
    assert sub.sessions_lost == 0


def _thief(port: int, client_id: str, connected: threading.Event, leave: threading.Event) -> None:
    """Connects with the collectors' client id and clean_start=False, as a hostile device would."""
    thief = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    thief.connect("127.0.0.1", port, clean_start=False)
    while not leave.is_set():  # no loop_start: paho must not reconnect and fight back
        thief.loop(0.05)
        if thief.is_connected():
            connected.set()
    thief.disconnect()


async def test_session_taken_over_by_another_client_is_reported_and_taken_back(broker_workdir: Path) -> None:
    recorder = Recorder()
    with durable_broker(broker_workdir) as broker:
        sub = subscriber(broker.port, recorder, "faults-victim", reconnect_delay_s=3.0, reconnect_max_delay_s=3.0)
        await sub.start()
        connected, leave = threading.Event(), threading.Event()
        thread = threading.Thread(target=_thief, args=(broker.port, "faults-victim", connected, leave))
        thread.start()
        try:
            # Mosquitto 2.0 closes our socket without a DISCONNECT 0x8E: reported as closed by the broker,
            # naming the takeover as the likely cause.
            assert await wait_until(lambda: not sub.connected)
            health = sub.health()
            assert health["reason"] == "closed_by_broker" and health["ok"] is False
            assert "session takeover" in health["error"] and "faults-victim" in health["error"]
            assert REGISTRY.get_sample_value("nakhon_mqtt_disconnects_total", {"reason": "closed_by_broker"}) >= 1
            # and it does not give up: after the backoff it takes the session back
            assert await wait_until(lambda: sub.connected and sub.generation == 2)
            # The thief connected without a session expiry, so the broker dropped the session when we took it
            # back: what it held for us is gone, and that is said too.
            assert sub.sessions_lost == 1
        finally:
            leave.set()
            await asyncio.to_thread(thread.join, 10)
        acked = await publish(broker.port, messages("back", 100))
        assert await wait_until(lambda: set(recorder.deliveries) >= set(acked))
        await sub.close()
    assert recorder.duplicates == {}


async def test_broker_that_lost_our_session_is_reported_and_resubscribed(broker_workdir: Path) -> None:
    recorder = Recorder()
    marker = broker_workdir / "mqtt-session"
    with durable_broker(broker_workdir) as broker:
        sub = subscriber(broker.port, recorder, "faults-amnesia", session_marker=marker)
        await sub.start()
        assert sub.sessions_lost == 0 and marker.exists()  # first start: no session expected
        base = REGISTRY.get_sample_value("nakhon_mqtt_session_lost_total") or 0.0
        broker.kill()  # a crash before Mosquitto saved anything
        (broker.dir / "mosquitto.db").unlink(missing_ok=True)
        broker.start()
        assert await wait_until(lambda: sub.connected and sub.generation == 2)
        assert sub.sessions_lost == 1 and sub.session_present is False
        assert REGISTRY.get_sample_value("nakhon_mqtt_session_lost_total") == base + 1
        acked = await publish(broker.port, messages("resubscribed", 100))  # the subscription was repaired
        assert await wait_until(lambda: set(recorder.deliveries) >= set(acked))
        await sub.close()

        # A restarted collector (marker on disk) notices too, on its very first connection.
        broker.kill()
        (broker.dir / "mosquitto.db").unlink(missing_ok=True)
        broker.start()
        again = subscriber(broker.port, recorder, "faults-amnesia", session_marker=marker)
        await again.start()
        assert again.sessions_lost == 1
        await again.close()
    assert recorder.duplicates == {}


async def test_intake_held_past_twice_the_keepalive_keeps_the_connection_and_redelivers_nothing(
    broker_workdir: Path,
) -> None:
    recorder = Recorder()
    recorder.hold_outcomes = True  # outcomes pending: like a full spool, nothing can be acknowledged
    with durable_broker(broker_workdir) as broker:
        sub = subscriber(broker.port, recorder, "faults-held", keepalive_s=2, receive_maximum=50)
        await sub.start()
        acked = await publish(broker.port, messages("held", 400))
        assert await wait_until(lambda: sub.paused and len(recorder.deliveries) >= 50)
        sub.hold("spool_full")
        await asyncio.sleep(9)  # the fault: 4.5 keepalives with nothing read (gmqtt gives up after 2)
        assert sub.connected and sub.generation == 1
        recorder.hold_outcomes = False
        sub.release("spool_full")
        recorder.settle()
        assert await wait_until(lambda: set(recorder.deliveries) >= set(acked))
        assert sub.connected and sub.generation == 1
        await sub.close()
    assert recorder.duplicates == {}


async def test_retained_readings_are_not_ingested_again_after_restarts_and_reconnects(broker_workdir: Path) -> None:
    recorder = Recorder()
    with durable_broker(broker_workdir) as broker:
        publisher = AckingPublisher(broker.port, client_id="faults-retain-pub")
        for i in range(20):
            publisher.client.publish(f"t/r{i}", f"retained-{i}".encode(), qos=1, retain=True).wait_for_publish(10)
        publisher.close()
        retained = {f"retained-{i}".encode() for i in range(20)}

        sub = subscriber(broker.port, recorder, "faults-retain")
        await sub.start()
        assert await wait_until(lambda: set(recorder.deliveries) >= retained)  # a new subscription gets them once
        await sub.close()

        for round_ in range(3):  # collector restarts
            sub = subscriber(broker.port, recorder, "faults-retain")
            await sub.start()
            for step in ("a", "b"):  # two markers: our SUBSCRIBE has certainly been handled before the second
                acked = await publish(broker.port, [("t/m", f"marker-{round_}-{step}".encode())])
                assert await wait_until(lambda acked=acked: set(recorder.deliveries) >= set(acked))
            await sub.close()

        sub = subscriber(broker.port, recorder, "faults-retain")
        await sub.start()
        broker.stop()  # a broker restart with its persistence: the session survives, so do retained messages
        broker.start()
        assert await wait_until(lambda: sub.connected and sub.generation == 2)
        assert sub.session_present
        for step in ("a", "b"):
            acked = await publish(broker.port, [("t/m", f"marker-broker-{step}".encode())])
            assert await wait_until(lambda acked=acked: set(recorder.deliveries) >= set(acked))
        await sub.close()
    assert recorder.duplicates == {}
    assert all(recorder.deliveries[payload] == 1 for payload in retained)


async def test_close_under_load_sends_disconnect_and_leaves_nothing_to_redeliver(broker_workdir: Path) -> None:
    first, second = Recorder(), Recorder()
    with durable_broker(broker_workdir, extra_conf="log_type notice") as broker:
        sub = subscriber(broker.port, first, "faults-close")
        await sub.start()
        publisher = AckingPublisher(broker.port, client_id="faults-close-pub")
        sending = asyncio.create_task(asyncio.to_thread(publisher.publish_many, messages("load", 6000), pace_s=0.0002))
        assert await wait_until(lambda: len(first.deliveries) >= 1000)
        await sub.close()  # SIGTERM's path: mid-stream
        await sending
        assert await asyncio.to_thread(publisher.wait_all_acked, 30)
        publisher.close()
        acked = set(publisher.acked)

        log = broker.log()
        assert "Client faults-close disconnected." in log  # a DISCONNECT, not a dropped socket
        assert "faults-close closed its connection" not in log

        resumed = subscriber(broker.port, second, "faults-close")
        await resumed.start()
        assert await wait_until(lambda: set(first.deliveries) | set(second.deliveries) >= acked)
        await resumed.close()
    assert set(first.deliveries) & set(second.deliveries) == set()  # nothing handled twice
    assert first.duplicates == {} and second.duplicates == {}
    assert len(first.deliveries) < len(acked)  # it really was closed mid-stream


def _shipped_autosave() -> str:
    conf = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"
    lines = [line for line in conf.read_text().splitlines() if line.startswith("autosave")]
    assert lines, "deploy/mosquitto/mosquitto.conf sets no autosave: a broker crash loses up to 30 minutes"
    return "\n".join(lines)


async def test_broker_sigkill_with_the_shipped_autosave_keeps_our_session_and_its_queue(broker_workdir: Path) -> None:
    recorder = Recorder()
    with durable_broker(broker_workdir, extra_conf=_shipped_autosave()) as broker:
        sub = subscriber(broker.port, recorder, "faults-crash")
        await sub.start()
        await sub.close()  # offline: what is published now waits in the broker's session
        acked = await publish(broker.port, messages("queued", 300))
        await asyncio.sleep(2.5)
        broker.kill()  # a crash 2.5 s after the messages were accepted: no clean save
        broker.start()
        again = subscriber(broker.port, recorder, "faults-crash")
        await again.start()
        assert again.session_present and again.sessions_lost == 0
        assert await wait_until(lambda: set(recorder.deliveries) >= set(acked))
        await again.close()
    assert recorder.duplicates == {}
