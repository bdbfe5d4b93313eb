"""/api/v1/devices/import: devices from a CSV file, in one transaction (see `gateway.registry.device_import`)."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from gateway.api.auth import Principal
from gateway.api.deps import ENGINEER, device_service
from gateway.api.problems import IMPORT_ERRORS, ValidationErrorOut
from gateway.errors import FieldProblem, GatewayError, InvalidInputError
from gateway.registry.schemas import ImportReport

MAX_IMPORT_BYTES = 32 * 1024 * 1024

router = APIRouter(tags=["devices"])


class ImportErrorOut(ImportReport):
    """422 of an import: the report (nothing applied) with the error code and messages."""

    error: str
    message: str
    message_th: str


class UnsupportedMediaTypeError(GatewayError):
    code = "unsupported_media_type"
    status_code = 415
    message_th = "รูปแบบข้อมูลที่ส่งมาไม่รองรับ"


class PayloadTooLargeError(GatewayError):
    code = "payload_too_large"
    status_code = 413
    message_th = "ไฟล์มีขนาดใหญ่เกินไป"


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
    report = await device_service(request).import_csv(
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
