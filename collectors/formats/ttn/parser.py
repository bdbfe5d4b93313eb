"""The Things Stack v3 MQTT uplinks: `v3/{application}@{tenant}/devices/{device}/up`."""

from __future__ import annotations

from collectors.errors import RejectedMessage
from collectors.formats._common import loads_object, lorawan_values, rejected_for, time_to_ns
from core.model import DeviceRef, RawReading


class TTNFormat:
    """Identity from `end_device_ids`, time from `received_at` (ns kept), values from `decoded_payload`.

    Without a `decoded_payload` (no payload formatter set in the console), `frm_payload` is decoded as
    Cayenne LPP when `lpp_fallback` is on.
    """

    name = "ttn"

    def __init__(self, lpp_fallback: bool = True) -> None:
        if not isinstance(lpp_fallback, bool):
            raise ValueError(f"ttn: lpp_fallback must be true or false, got {lpp_fallback!r}")
        self.lpp_fallback = lpp_fallback

    topic_filter = "v3/+/devices/+/up"

    def parse(self, topic: str, payload: bytes, received_ns: int) -> list[RawReading]:
        parts = topic.split("/")
        # multi-tenant (TTS Cloud / TTN): v3/{app}@{tenant}/devices/{dev}/up; single-tenant: v3/{app}/devices/...
        if len(parts) != 5 or parts[0] != "v3" or parts[2] != "devices" or parts[4] != "up" or not parts[3]:
            raise RejectedMessage(
                "bad_topic", f"topic {topic!r} is not v3/{{application}}@{{tenant}}/devices/{{device}}/up"
            )
        doc = loads_object(payload, "The Things Stack uplink")
        ids = doc.get("end_device_ids")
        ids = ids if isinstance(ids, dict) else {}
        device_id = ids.get("device_id") if isinstance(ids.get("device_id"), str) else parts[3]
        dev_eui = ids.get("dev_eui") if isinstance(ids.get("dev_eui"), str) else None
        device = DeviceRef(device_id=device_id, dev_eui=dev_eui.upper() if dev_eui else None)

        up = doc.get("uplink_message")
        if not isinstance(up, dict):
            raise RejectedMessage(
                "no_values", "message has no uplink_message (not an uplink event?)", device_id=device_id
            )
        received_at = doc.get("received_at", up.get("received_at"))
        with rejected_for(device_id):
            time_ns = received_ns if received_at is None else time_to_ns(received_at, "received_at")
        values = lorawan_values(
            up.get("decoded_payload"),
            up.get("frm_payload"),
            decoded_field="uplink_message.decoded_payload",
            payload_field="uplink_message.frm_payload",
            lpp_fallback=self.lpp_fallback,
            device_id=device_id,
            no_values="uplink has no decoded_payload and no Cayenne LPP frm_payload",
        )
        return [RawReading(device, values, time_ns)]
