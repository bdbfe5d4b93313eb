"""The /api/v1 routes: devices, CSV import, profiles, overrides, maintenance, diagnostics, audit, tokens."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gateway.api.auth import Principal, require_role
from gateway.api.problems import COMMON_ERRORS, IMPORT_ERRORS, WRITE_ERRORS, ValidationErrorOut
from gateway.errors import DeviceNotFoundError, FieldProblem, GatewayError, InvalidInputError
from gateway.registry.schemas import (
    DEVICE_ID_PATTERN,
    AuditOut,
    DeviceOut,
    DevicePatch,
    DeviceSpec,
    DiagnosticsOut,
    Feed,
    ImportReport,
    MaintenanceSpec,
    OverridesOut,
    OverridesSpec,
    Page,
    ProfileOut,
    ProfilePatch,
    ProfileSpec,
    Status,
    TokenOut,
    TokenSpec,
    UtcTime,
)
from gateway.registry.store import RegistryStore
from gateway.service import NOTE_EN, NOTE_TH, DeviceService

MAX_IMPORT_BYTES = 32 * 1024 * 1024

READ = require_role()
ENGINEER = require_role("engineer")
ADMIN = require_role("admin")

DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, description="Device id (also its MQTT username)")]
NameParam = Annotated[str, Path(pattern=DEVICE_ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=100_000_000)]
TextFilter = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


class MqttCredentialsOut(BaseModel):
    username: str
    password: str
    topic: str
    client_id: str = Field(description="The only MQTT client id this account may connect with (= username)")
    note: str = NOTE_EN
    note_th: str = NOTE_TH


class ImportErrorOut(ImportReport):
    """422 of an import: the report (nothing applied) with the error code and messages."""

    error: str
    message: str
    message_th: str


class DeviceCreatedOut(BaseModel):
    device: DeviceOut
    mqtt: MqttCredentialsOut | None
    message: str
    message_th: str


class TokenCreatedOut(BaseModel):
    token: TokenOut
    secret: str
    note: str = "Store this token now: it is shown only once."
    note_th: str = "โปรดบันทึกโทเค็นนี้ทันที ระบบจะแสดงเพียงครั้งเดียว"


class UnsupportedMediaTypeError(GatewayError):
    code = "unsupported_media_type"
    status_code = 415
    message_th = "รูปแบบข้อมูลที่ส่งมาไม่รองรับ"


class PayloadTooLargeError(GatewayError):
    code = "payload_too_large"
    status_code = 413
    message_th = "ไฟล์มีขนาดใหญ่เกินไป"


def _store(request: Request) -> RegistryStore:
    store: RegistryStore = request.app.state.registry
    return store


def _service(request: Request) -> DeviceService:
    service: DeviceService = request.app.state.device_service
    return service


def _visible_device(request: Request, who: Principal, device_id: str) -> DeviceOut:
    """The device, if the caller's cities include its city; otherwise 404, as if it did not exist."""
    device = _store(request).devices.get(device_id)
    if not who.sees_city(device.city):
        raise DeviceNotFoundError(device_id)
    return device


def _csv_from_multipart(content_type: str, body: bytes) -> bytes:
    """The first file part (or the part named `file`) of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise InvalidInputError([FieldProblem("file", "malformed multipart/form-data body")])
    chosen: Any = None
    for part in message.iter_parts():
        disposition = part.get("Content-Disposition", "")
        if part.get_param("name", header="content-disposition") == "file" or "filename=" in str(disposition):
            chosen = part
            break
    if chosen is None:
        raise InvalidInputError([FieldProblem("file", "no file part: send the CSV as form field `file`")])
    payload = chosen.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise InvalidInputError([FieldProblem("file", "the file part is empty")])
    return payload


IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses={**COMMON_ERRORS, **WRITE_ERRORS})

    # ------------------------------------------------------------------ devices

    @router.post("/devices", status_code=201, response_model=DeviceCreatedOut, tags=["devices"])
    async def create_device(
        spec: DeviceSpec, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
    ) -> DeviceCreatedOut:
        """Register a device. With a broker configured, its MQTT password is in the answer: shown only once."""
        who.require_cities([spec.city])
        device, credentials = await _service(request).create_device(spec, actor=who.actor)
        mqtt = MqttCredentialsOut(**vars_of(credentials)) if credentials else None
        if mqtt:
            message, message_th = "device registered; MQTT credentials issued", "ลงทะเบียนอุปกรณ์และออกรหัส MQTT แล้ว"
        else:
            message, message_th = (
                "device registered; no MQTT broker configured, so no credentials were issued",
                "ลงทะเบียนอุปกรณ์แล้ว แต่ยังไม่ได้ตั้งค่าโบรกเกอร์ MQTT จึงยังไม่ได้ออกรหัส",
            )
        return DeviceCreatedOut(device=device, mqtt=mqtt, message=message, message_th=message_th)

    @router.get("/devices", response_model=Page[DeviceOut], tags=["devices"])
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
        return _store(request).devices.find(
            city=city,
            district=district,
            feed=feed,
            status=status,
            limit=limit,
            offset=offset,
            cities=sorted(who.cities) if who.cities is not None else None,
        )

    @router.post(
        "/devices/import",
        response_model=ImportReport,
        responses={
            **IMPORT_ERRORS,
            422: {
                "model": ImportErrorOut | ValidationErrorOut,  # type: ignore[dict-item]
                "description": "bad rows (nothing was changed), or a bad query parameter",
            },
        },
        openapi_extra=IMPORT_BODY,
        tags=["devices"],
    )
    async def import_devices(
        request: Request, who: Annotated[Principal, Depends(ENGINEER)], dry_run: bool = False
    ) -> Response:
        """Upsert devices from CSV (`text/csv` body or multipart field `file`). One transaction: if any row is
        bad, nothing changes and every bad row is listed with its line number and field."""
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";")[0].strip().lower()
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_IMPORT_BYTES:
                raise PayloadTooLargeError(f"the CSV is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB; split it")
            chunks.append(chunk)
        body = b"".join(chunks)
        if media == "multipart/form-data":
            body = await asyncio.to_thread(_csv_from_multipart, content_type, body)
        elif media not in ("text/csv", "text/plain", "application/csv", "application/octet-stream"):
            sent = media or "no content type"
            raise UnsupportedMediaTypeError(f"send the CSV as text/csv or multipart/form-data, not {sent!r}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                [FieldProblem("file", f"not UTF-8 text (byte {exc.start}); save the CSV as UTF-8")]
            ) from exc
        report = await _service(request).import_csv(
            text, actor=who.actor, atomic=True, dry_run=dry_run, cities=who.cities
        )
        status = 422 if report.errors else 200
        body_json: dict[str, Any] = report.model_dump(mode="json")
        if report.errors:
            body_json.update(
                error="validation_failed",
                message=f"{report.rejected} row(s) are invalid; nothing was imported",
                message_th=f"มี {report.rejected} แถวที่ไม่ถูกต้อง จึงไม่ได้นำเข้าข้อมูลใดเลย",
            )
        return JSONResponse(body_json, status_code=status)

    @router.get("/devices/{device_id}", response_model=DeviceOut, tags=["devices"])
    def get_device(device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(READ)]) -> DeviceOut:
        return _visible_device(request, who, device_id)

    @router.patch("/devices/{device_id}", response_model=DeviceOut, tags=["devices"])
    async def update_device(
        device_id: DeviceId, patch: DevicePatch, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
    ) -> DeviceOut:
        _visible_device(request, who, device_id)
        if patch.city is not None:
            who.require_cities([patch.city])
        return await _service(request).update_device(device_id, patch, actor=who.actor)

    @router.delete("/devices/{device_id}", response_model=DeviceOut, tags=["devices"])
    async def retire_device(
        device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
    ) -> DeviceOut:
        """Retire the device: its MQTT account is deleted on the broker at once; its history stays."""
        _visible_device(request, who, device_id)
        return await _service(request).retire_device(device_id, actor=who.actor)

    @router.post("/devices/{device_id}/rotate-credentials", response_model=MqttCredentialsOut, tags=["devices"])
    async def rotate_credentials(
        device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
    ) -> MqttCredentialsOut:
        """A new MQTT password, effective at once (the old one stops working). Shown only once."""
        _visible_device(request, who, device_id)
        credentials = await _service(request).rotate_credentials(device_id, actor=who.actor)
        return MqttCredentialsOut(**vars_of(credentials))

    @router.post("/devices/{device_id}/maintenance", response_model=DeviceOut, tags=["devices"])
    def set_maintenance(
        device_id: DeviceId,
        spec: MaintenanceSpec,
        request: Request,
        who: Annotated[Principal, Depends(ENGINEER)],
    ) -> DeviceOut:
        """Maintenance until a time (it ends by itself); `{"until": null}` ends it now."""
        _visible_device(request, who, device_id)
        return _store(request).devices.set_maintenance(device_id, spec.until, actor=who.actor)

    @router.get("/devices/{device_id}/overrides", response_model=OverridesOut, tags=["devices"])
    def get_overrides(device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(READ)]) -> OverridesOut:
        _visible_device(request, who, device_id)
        return _store(request).overrides.get(device_id)

    @router.put("/devices/{device_id}/overrides", response_model=OverridesOut, tags=["devices"])
    def set_overrides(
        device_id: DeviceId,
        spec: OverridesSpec,
        request: Request,
        who: Annotated[Principal, Depends(ENGINEER)],
    ) -> OverridesOut:
        """Replace the device's threshold overrides and calibration ({field: {offset, scale}})."""
        _visible_device(request, who, device_id)
        return _store(request).overrides.set(device_id, spec, actor=who.actor)

    @router.get("/devices/{device_id}/diagnostics", response_model=DiagnosticsOut, tags=["devices"])
    def diagnostics(device_id: DeviceId, request: Request, who: Annotated[Principal, Depends(READ)]) -> DiagnosticsOut:
        """Last seen, last reading, and the last 20 raw messages with whether each was accepted and why not."""
        _visible_device(request, who, device_id)
        return _store(request).recent.diagnostics(device_id)

    # ------------------------------------------------------------------ profiles

    @router.get("/profiles", response_model=list[ProfileOut], tags=["profiles"])
    def list_profiles(request: Request, _who: Annotated[Principal, Depends(READ)]) -> list[ProfileOut]:
        return _store(request).profiles.all()

    @router.post("/profiles", status_code=201, response_model=ProfileOut, tags=["profiles"])
    def create_profile(spec: ProfileSpec, request: Request, who: Annotated[Principal, Depends(ENGINEER)]) -> ProfileOut:
        who.require_unscoped("a device profile")
        return _store(request).profiles.create(spec, actor=who.actor)

    @router.get("/profiles/{name}", response_model=ProfileOut, tags=["profiles"])
    def get_profile(name: NameParam, request: Request, _who: Annotated[Principal, Depends(READ)]) -> ProfileOut:
        return _store(request).profiles.get(name)

    @router.patch("/profiles/{name}", response_model=ProfileOut, tags=["profiles"])
    def update_profile(
        name: NameParam, patch: ProfilePatch, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
    ) -> ProfileOut:
        who.require_unscoped("a device profile")
        return _store(request).profiles.update(name, patch, actor=who.actor)

    @router.delete("/profiles/{name}", status_code=204, tags=["profiles"])
    def delete_profile(name: NameParam, request: Request, who: Annotated[Principal, Depends(ENGINEER)]) -> Response:
        who.require_unscoped("a device profile")
        _store(request).profiles.delete(name, actor=who.actor)
        return Response(status_code=204)

    # ------------------------------------------------------------------ audit

    @router.get("/audit", response_model=Page[AuditOut], tags=["audit"])
    def list_audit(
        request: Request,
        who: Annotated[Principal, Depends(ENGINEER)],
        entity_type: TextFilter = None,
        entity_id: TextFilter = None,
        actor: TextFilter = None,
        action: TextFilter = None,
        since: Annotated[UtcTime | None, Query(description="from this time (with offset)")] = None,
        until: Annotated[UtcTime | None, Query(description="before this time (with offset)")] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Page[AuditOut]:
        who.require_unscoped("the audit log")
        return _store(request).audit.find(
            entity_type=entity_type,
            entity_id=entity_id,
            actor=actor,
            action=action,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )

    # ------------------------------------------------------------------ API tokens (admin)

    @router.get("/tokens", response_model=list[TokenOut], tags=["tokens"])
    def list_tokens(request: Request, who: Annotated[Principal, Depends(ADMIN)]) -> list[TokenOut]:
        who.require_unscoped("API tokens")
        return _store(request).tokens.all()

    @router.post("/tokens", status_code=201, response_model=TokenCreatedOut, tags=["tokens"])
    def create_token(spec: TokenSpec, request: Request, who: Annotated[Principal, Depends(ADMIN)]) -> TokenCreatedOut:
        who.require_unscoped("API tokens")
        token, secret = _store(request).tokens.create(
            spec.name, spec.role, actor=who.actor, expires_at=spec.expires_at, cities=spec.cities
        )
        return TokenCreatedOut(token=token, secret=secret)

    @router.delete("/tokens/{name}", response_model=TokenOut, tags=["tokens"])
    def revoke_token(name: NameParam, request: Request, who: Annotated[Principal, Depends(ADMIN)]) -> TokenOut:
        who.require_unscoped("API tokens")
        return _store(request).tokens.revoke(name, actor=who.actor)

    return router


def vars_of(credentials: Any) -> dict[str, str]:
    return {
        "username": credentials.username,
        "password": credentials.password,
        "topic": credentials.topic,
        "client_id": credentials.client_id,
    }
