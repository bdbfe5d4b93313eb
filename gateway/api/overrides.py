"""/api/v1/devices/{id}/overrides: a device's threshold overrides and calibration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from gateway.api.auth import Principal
from gateway.api.deps import ENGINEER, READ, DeviceId, registry, visible_device
from gateway.registry.schemas import OverridesOut, OverridesSpec

router = APIRouter(tags=["devices"])


@router.get("/devices/{device_id}/overrides", response_model=OverridesOut)
def get_overrides(device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(READ)]) -> OverridesOut:
    visible_device(request, who, device_id)
    return registry(request).overrides.get(device_id)


@router.put("/devices/{device_id}/overrides", response_model=OverridesOut)
def set_overrides(
    device_id: DeviceId,
    spec: OverridesSpec,
    request: Request,
    who: Annotated[Principal, Depends(ENGINEER)],
) -> OverridesOut:
    """Replace the device's threshold overrides and calibration ({field: {offset, scale}})."""
    visible_device(request, who, device_id)
    return registry(request).overrides.set(device_id, spec, actor=who.actor)
