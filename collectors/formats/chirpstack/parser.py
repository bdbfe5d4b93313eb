"""ChirpStack v4 MQTT uplink events: `application/{application_id}/device/{dev_eui}/event/up`."""

from __future__ import annotations

from collectors.errors import RejectedMessage
from collectors.formats._common import loads_object, lorawan_values, rejected_for, time_to_ns
from core.model import DeviceRef, RawReading


class ChirpStackFormat:
    """Identity from `deviceInfo` (`devEui`, `deviceName`), time from `time`, values from `object`.

    Without an `object` (no codec in the device profile), base64 `data` is decoded as Cayenne LPP when
    `lpp_fallback` is on. `deviceName` is a free-text name in ChirpStack: it becomes `device.device_id`
    only when `name_is_device_id` is on (the default); the DevEUI is always set and should be preferred.
    """

    name = "chirpstack"
    topic_filter = "application/+/device/+/event/up"

    def __init__(self, lpp_fallback: bool = True, name_is_device_id: bool = True) -> None:
        for option, value in (("lpp_fallback", lpp_fallback), ("name_is_device_id", name_is_device_id)):
            if not isinstance(value, bool):
                raise ValueError(f"chirpstack: {option} must be true or false, got {value!r}")
        self.lpp_fallback = lpp_fallback
        self.name_is_device_id = name_is_device_id

    def parse(self, topic: str, payload: bytes, received_ns: int) -> list[RawReading]:
        parts = topic.split("/")
        if (
            len(parts) != 6
            or parts[0] != "application"
            or parts[2] != "device"
            or parts[4] != "event"
            or parts[5] != "up"
            or not parts[3]
        ):
            raise RejectedMessage(
                "bad_topic", f"topic {topic!r} is not application/{{application_id}}/device/{{dev_eui}}/event/up"
            )
        doc = loads_object(payload, "ChirpStack uplink event")
        info = doc.get("deviceInfo")
        info = info if isinstance(info, dict) else {}
        raw_eui = info.get("devEui")
        dev_eui: str = raw_eui if isinstance(raw_eui, str) and raw_eui else parts[3]
        name = info.get("deviceName") if isinstance(info.get("deviceName"), str) else None
        device = DeviceRef(device_id=name if self.name_is_device_id else None, dev_eui=dev_eui.upper())
        label = str(device)

        with rejected_for(label):
            time_ns = received_ns if doc.get("time") is None else time_to_ns(doc["time"], "time")
        values = lorawan_values(
            doc.get("object"),
            doc.get("data"),
            decoded_field="object",
            payload_field="data",
            lpp_fallback=self.lpp_fallback,
            device_id=label,
            no_values="uplink has no decoded object and no Cayenne LPP data",
        )
        return [RawReading(device, values, time_ns)]
