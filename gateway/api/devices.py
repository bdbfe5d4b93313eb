"""/api/v1/devices: register, list, show, change, retire; MQTT credentials, maintenance, diagnostics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from gateway.api.auth import Principal
from gateway.api.deps import (
    ENGINEER,
    READ,
    DeviceId,
    Limit,
    Offset,
    TextFilter,
    device_service,
    registry,
    visible_device,
)
from gateway.registry.schemas import (
    DeviceOut,
    DevicePatch,
    DeviceSpec,
    DiagnosticsOut,
    Feed,
    MaintenanceSpec,
    Page,
    Status,
)
from gateway.service import NOTE_EN, NOTE_TH, IssuedCredentials

router = APIRouter(tags=["devices"])


class MqttCredentialsOut(BaseModel):
    username: str
    password: str
    topic: str
    client_id: str = Field(description="The only MQTT client id this account may connect with (= username)")
    note: str = NOTE_EN
    note_th: str = NOTE_TH

    @classmethod
    def of(cls, credentials: IssuedCredentials) -> MqttCredentialsOut:
        return cls(
            username=credentials.username,
            password=credentials.password,
            topic=credentials.topic,
            client_id=credentials.client_id,
        )


class DeviceCreatedOut(BaseModel):
    device: DeviceOut
    mqtt: MqttCredentialsOut | None
    message: str
    message_th: str


@router.post("/devices", status_code=201, response_model=DeviceCreatedOut)
async def create_device(
    spec: DeviceSpec, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
) -> DeviceCreatedOut:
    """Register a device. With a broker configured, its MQTT password is in the answer: shown only once."""
    who.require_cities([spec.city])
    device, credentials = await device_service(request).create_device(spec, actor=who.actor)
    mqtt = MqttCredentialsOut.of(credentials) if credentials else None
    if mqtt:
        message, message_th = "device registered; MQTT credentials issued", "ลงทะเบียนอุปกรณ์และออกรหัส MQTT แล้ว"
    else:
        message, message_th = (
            "device registered; no MQTT broker configured, so no credentials were issued",
            "ลงทะเบียนอุปกรณ์แล้ว แต่ยังไม่ได้ตั้งค่าโบรกเกอร์ MQTT จึงยังไม่ได้ออกรหัส",
        )
    return DeviceCreatedOut(device=device, mqtt=mqtt, message=message, message_th=message_th)


@router.get("/devices", response_model=Page[DeviceOut])
def list_devices(
    request: Request,
    who: Annotated[Principal, Depends(READ)],
    city: TextFilter = None,
    district: TextFilter = None,
    feed: Feed | None = None,
    status: Status | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DeviceOut]:
    return registry(request).devices.find(
        city=city,
        district=district,
        feed=feed,
        status=status,
        limit=limit,
        offset=offset,
        cities=sorted(who.cities) if who.cities is not None else None,
    )


@router.get("/devices/{device_id}", response_model=DeviceOut)
def get_device(device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(READ)]) -> DeviceOut:
    return visible_device(request, who, device_id)


@router.patch("/devices/{device_id}", response_model=DeviceOut)
async def update_device(
    device_id: DeviceId, patch: DevicePatch, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
) -> DeviceOut:
    visible_device(request, who, device_id)
    if patch.city is not None:
        who.require_cities([patch.city])
    return await device_service(request).update_device(device_id, patch, actor=who.actor)


@router.delete("/devices/{device_id}", response_model=DeviceOut)
async def retire_device(
    device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
) -> DeviceOut:
    """Retire the device: its MQTT account is deleted on the broker at once; its history stays."""
    visible_device(request, who, device_id)
    return await device_service(request).retire_device(device_id, actor=who.actor)


@router.post("/devices/{device_id}/rotate-credentials", response_model=MqttCredentialsOut)
async def rotate_credentials(
    device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
) -> MqttCredentialsOut:
    """A new MQTT password, effective at once (the old one stops working). Shown only once."""
    visible_device(request, who, device_id)
    return MqttCredentialsOut.of(await device_service(request).rotate_credentials(device_id, actor=who.actor))


@router.post("/devices/{device_id}/maintenance", response_model=DeviceOut)
def set_maintenance(
    device_id: DeviceId,
    spec: MaintenanceSpec,
    request: Request,
    who: Annotated[Principal, Depends(ENGINEER)],
) -> DeviceOut:
    """Maintenance until a time (it ends by itself); `{"until": null}` ends it now."""
    visible_device(request, who, device_id)
    return registry(request).devices.set_maintenance(device_id, spec.until, actor=who.actor)


@router.get("/devices/{device_id}/diagnostics", response_model=DiagnosticsOut)
def diagnostics(device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(READ)]) -> DiagnosticsOut:
    """Last seen, last reading, and the last 20 raw messages with whether each was accepted and why not."""
    visible_device(request, who, device_id)
    return registry(request).recent.diagnostics(device_id)
