"""The error bodies the API really returns, as OpenAPI models, and the `responses` every route declares.

Every error is `{"error": code, "message": English, "message_th": Thai, "context"?: {...}}`; validation
failures (422) add `errors`: one entry per field (and CSV row) at fault. `nakhon`'s tests run schemathesis with
all checks against these declarations.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    error: str = Field(description="Short stable code, e.g. device_not_found, forbidden, conflict")
    message: str
    message_th: str
    context: dict[str, Any] | None = Field(default=None, description="What the error concerns (never a secret)")


class FieldProblemOut(BaseModel):
    field: str
    message: str
    row: int | None = Field(default=None, description="CSV line number (1 = header)")
    value: str | None = None
    in_: str | None = Field(default=None, alias="in", description="path, query, body ... (request validation)")


class ValidationErrorOut(ErrorOut):
    errors: list[FieldProblemOut]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


# What any authenticated route may answer besides its success.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("The body could not be read (not JSON, or not the declared content type)"),
    401: _error("Missing, invalid, revoked or expired token (with `WWW-Authenticate: Bearer`)"),
    403: _error("The token's role or cities do not allow this"),
    404: _error("Not found (also: a device outside the token's cities)"),
    422: {
        "model": ValidationErrorOut,
        "description": "Invalid input: every field at fault is named. With `in`: the request does not match this "
        "document (or a rule between its fields); without: a rule about stored data or the route's own rule "
        "(unknown profile, reserved id, CSV row, a silence ending before it starts)",
    },
    429: _error("Too many failed authentications from this address (with `Retry-After`)"),
    500: _error("Unexpected error (logged without the request's data)"),
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: _error("Conflicts with what is stored (duplicate, retired device, broker account not issued here)"),
    502: _error("The MQTT broker refused, was unreachable or timed out"),
    503: _error("No MQTT broker is configured"),
}
IMPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: _error("The CSV is too large"),
    415: _error("Not text/csv or multipart/form-data"),
}

__all__ = ["COMMON_ERRORS", "IMPORT_ERRORS", "WRITE_ERRORS", "ErrorOut", "FieldProblemOut", "ValidationErrorOut"]
