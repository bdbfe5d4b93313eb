"""Device specs and CSV text the registry tests share."""

from __future__ import annotations

from gateway.registry.schemas import DeviceSpec

HEADER = "device_id,feed,city,district,lat,lon,name"


def flood(device_id: str = "cm-flood-1", **extra: object) -> DeviceSpec:
    data: dict[str, object] = {
        "device_id": device_id,
        "feed": "flood",
        "city": "chiangmai",
        "district": "Mueang",
        "name": "P.1 Nawarat bridge",
        "lat": 18.79,
        "lon": 98.99,
        "site": {"bank_level_m": 3.7, "ground_level_m": 0.0},
    }
    data.update(extra)
    return DeviceSpec.model_validate(data)
