"""The publisher against a real Mosquitto: what it reports as acknowledged is exactly what a QoS 1 subscriber
receives, pacing and backpressure hold, and the password never shows up in a log."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from nakhon.sim.city import City, SimDevice
from nakhon.sim.publisher import PublishStats, parse_mqtt_url, publish_city, redact_url
from tests.servers import MosquittoServer

PASSWORD = "s3cret-Pa55word"


class Subscriber:
    """A paho QoS 1 subscriber collecting (device_id, ts) of every message under city/#."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        self.received: list[tuple[str, int]] = []
        self.topics: set[str] = set()
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{id(self)}")
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, *_: c.subscribe("city/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber did not subscribe"

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        ts = orjson.loads(message.payload)["ts"]
        with self.lock:
            self.received.append((message.topic.rsplit("/", 1)[1], ts))
            self.topics.add(message.topic)

    def wait_for(self, n: int, timeout: float = 30.0) -> list[tuple[str, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= n:
                    break
            time.sleep(0.05)
        time.sleep(0.3)  # anything extra would show up now
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    with MosquittoServer(tmp_path) as server:
        yield server


@pytest.fixture
def devices() -> list[SimDevice]:
    return City(seed=1).devices(40)


def test_url_parsing_and_redaction() -> None:
    target = parse_mqtt_url(f"mqtt://sim:{PASSWORD}@broker.example:1884")
    assert (target.host, target.port, target.username, target.password, target.tls) == (
        "broker.example",
        1884,
        "sim",
        PASSWORD,
        False,
    )
    assert PASSWORD not in repr(target) and PASSWORD not in target.redacted()
    assert parse_mqtt_url("mqtts://h").port == 8883 and parse_mqtt_url("mqtt://h").port == 1883
    assert redact_url(f"mqtt://sim:{PASSWORD}@h:1") == "mqtt://sim@h:1"
    assert redact_url("mqtt://h:1") == "mqtt://h:1"
    with pytest.raises(ValueError):
        parse_mqtt_url("http://h")


async def test_subscriber_receives_exactly_the_acknowledged_messages(
    broker: MosquittoServer, devices: list[SimDevice]
) -> None:
    sub = Subscriber(broker.port)
    try:
        stats = await publish_city(
            broker.url,
            devices=devices,
            rate=0,
            duration_s=None,
            count=3000,
            qos=1,
            client_id="t-exact",
            record_acked=True,
            malformed_rate=0.02,
        )
        received = sub.wait_for(stats.acknowledged)
    finally:
        sub.close()
    assert stats.published == 3000 and stats.acknowledged == 3000 and stats.failed == 0
    assert stats.malformed == 60
    assert stats.seconds > 0 and stats.rate > 0
    assert stats.acked is not None and len(stats.acked) == 3000 == len(set(stats.acked))
    assert sorted(received) == sorted(stats.acked)
    assert all(t.startswith("city/laem-chabang/") for t in sub.topics)


async def test_two_processes_sum_their_stats(broker: MosquittoServer, devices: list[SimDevice]) -> None:
    sub = Subscriber(broker.port)
    progress: list[PublishStats] = []
    try:
        stats = await publish_city(
            broker.url,
            devices=devices,
            rate=0,
            count=4001,
            qos=1,
            client_id="t-procs",
            processes=2,
            record_acked=True,
            on_progress=progress.append,
            progress_interval_s=0.05,
        )
        received = sub.wait_for(stats.acknowledged)
    finally:
        sub.close()
    assert (stats.published, stats.acknowledged, stats.failed) == (4001, 4001, 0)
    assert stats.acked is not None and sorted(received) == sorted(stats.acked)
    # Between them the processes covered every device, and no message is counted twice.
    assert len(set(stats.acked)) == len(stats.acked) == 4001
    assert {d for d, _ in stats.acked} == {d.device_id for d in devices}
    # Progress reports are the processes' counters summed: they only grow and never pass the total.
    assert progress, "no progress reported while the processes ran"
    published = [p.published for p in progress]
    assert published == sorted(published) and published[-1] <= 4001


async def test_rate_is_paced_and_duration_respected(broker: MosquittoServer, devices: list[SimDevice]) -> None:
    progress: list[PublishStats] = []
    stats = await publish_city(
        broker.url,
        devices=devices,
        rate=100,
        duration_s=2.0,
        qos=1,
        client_id="t-rate",
        on_progress=progress.append,
        progress_interval_s=0.5,
    )
    # paced: never more than rate × duration (+ one bucket of slack); a loaded machine may publish fewer
    assert 100 <= stats.published <= 205
    assert stats.acknowledged == stats.published and stats.failed == 0
    assert stats.seconds >= 1.9  # ran for its duration (no upper bound: that would be a timing assertion)
    assert progress and progress[-1].published <= stats.published


async def test_qos0_counts_what_was_sent(broker: MosquittoServer, devices: list[SimDevice]) -> None:
    stats = await publish_city(broker.url, devices=devices, rate=0, count=500, qos=0, client_id="t-qos0")
    assert stats.published == 500 and stats.acknowledged == 500


async def test_inflight_window_bounds_unacknowledged_messages(tmp_path: Path, devices: list[SimDevice]) -> None:
    """A broker that stops answering (SIGSTOP after the publisher connected): the publisher stops at its window
    of 50 unacknowledged messages instead of queueing everything, and reports them as failed."""
    with MosquittoServer(tmp_path) as server:
        assert server.proc is not None
        freeze = threading.Timer(0.5, server.proc.send_signal, args=(signal.SIGSTOP,))
        freeze.start()
        try:
            stats = await publish_city(
                server.url,
                devices=devices,
                rate=0,
                duration_s=2.0,
                qos=1,
                client_id="t-window",
                max_inflight=50,
                drain_timeout_s=0.5,
            )
        finally:
            freeze.join()
            server.proc.send_signal(signal.SIGCONT)
    assert stats.published - stats.acknowledged == 50 == stats.failed


def _password_broker(tmp_path: Path) -> MosquittoServer:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "sim", PASSWORD], check=True, capture_output=True)
    passwd.chmod(0o600)
    # As root Mosquitto drops to the `mosquitto` user, which cannot read our private file: keep root then.
    keep_user = "user root\n" if os.geteuid() == 0 else ""
    return MosquittoServer(tmp_path, extra_conf=f"{keep_user}password_file {passwd}", allow_anonymous=False)


async def test_password_is_never_logged(
    tmp_path: Path, devices: list[SimDevice], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with _password_broker(tmp_path) as server:
        url = f"mqtt://sim:{PASSWORD}@127.0.0.1:{server.port}"
        sub = Subscriber(server.port, "sim", PASSWORD)
        try:
            stats = await publish_city(url, devices=devices, rate=0, count=200, qos=1, client_id="t-auth")
            received = sub.wait_for(200)
        finally:
            sub.close()
        assert stats.acknowledged == 200 and len(received) == 200
        with pytest.raises(ConnectionError) as refused:
            await publish_city(
                f"mqtt://sim:wrong-{PASSWORD}@127.0.0.1:{server.port}", devices=devices, count=5, client_id="t-bad"
            )
        broker_log = server.log()
    assert "sim@127.0.0.1" in str(refused.value)
    assert PASSWORD not in str(refused.value)
    out, err = capfd.readouterr()
    assert caplog.records, "expected some log output to check"
    assert any("sim@127.0.0.1" in r.getMessage() for r in caplog.records)
    for text in [*(r.getMessage() for r in caplog.records), caplog.text, out, err, broker_log]:
        assert PASSWORD not in text


async def test_unreachable_broker_is_a_clear_error(devices: list[SimDevice]) -> None:
    from tests.servers import free_port

    with pytest.raises(ConnectionError, match=r"mqtt://u@127\.0\.0\.1"):
        await publish_city(f"mqtt://u:{PASSWORD}@127.0.0.1:{free_port()}", devices=devices, count=1)
