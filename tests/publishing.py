"""A QoS 1 test publisher that records exactly which messages the broker acknowledged (PUBACK)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import paho.mqtt.client as mqtt


class AckingPublisher:
    """paho-mqtt publisher over MQTT 5; `acked` holds the payloads the broker sent a PUBACK for."""

    def __init__(self, port: int, *, client_id: str = "test-publisher", username: str | None = None,
                 password: str | None = None, max_inflight: int = 200) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(max_inflight)
        self._lock = threading.Lock()
        self._by_mid: dict[int, bytes] = {}
        self._early: dict[int, int] = {}  # PUBACKs that arrived before publish() recorded their mid
        self.acked: list[bytes] = []
        self.refused: list[tuple[bytes, int]] = []
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        code = int(getattr(reason, "value", 0) or 0)
        with self._lock:
            payload = self._by_mid.pop(mid, None)
            if payload is None:
                self._early[mid] = code
                return
            self._settle(payload, code)

    def _settle(self, payload: bytes, code: int) -> None:
        if code >= 0x80:
            self.refused.append((payload, code))
        else:
            self.acked.append(payload)

    def publish(self, topic: str, payload: bytes) -> None:
        # paho calls on_publish while holding its own lock: never hold ours across client.publish()
        info = self.client.publish(topic, payload, qos=1)
        with self._lock:
            if info.mid in self._early:
                self._settle(payload, self._early.pop(info.mid))
            else:
                self._by_mid[info.mid] = payload

    def publish_many(self, messages: Iterable[tuple[str, bytes]], *, pace_s: float = 0.0) -> None:
        for topic, payload in messages:
            self.publish(topic, payload)
            if pace_s:
                time.sleep(pace_s)

    def wait_all_acked(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._by_mid:
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
