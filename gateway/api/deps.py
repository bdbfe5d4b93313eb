"""What the /api/v1 routers share: role checks, path and query parameter shapes, the app's stores."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request

from gateway.api.auth import Principal, require_role
from gateway.errors import DeviceNotFoundError
from gateway.registry.schemas import DEVICE_ID_PATTERN, DeviceOut
from gateway.registry.store import RegistryStore
from gateway.service import DeviceService

READ = require_role()
ENGINEER = require_role("engineer")
ADMIN = require_role("admin")

DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, description="Device id (also its MQTT username)")]
NameParam = Annotated[str, Path(pattern=DEVICE_ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=100_000_000)]
TextFilter = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


def registry(request: Request) -> RegistryStore:
    store: RegistryStore = request.app.state.registry
    return store


def device_service(request: Request) -> DeviceService:
    service: DeviceService = request.app.state.device_service
    return service


def visible_device(request: Request, who: Principal, device_id: str) -> DeviceOut:
    """The device, if the caller's cities include its city; otherwise 404, as if it did not exist."""
    device = registry(request).devices.get(device_id)
    if not who.sees_city(device.city):
        raise DeviceNotFoundError(device_id)
    return device
