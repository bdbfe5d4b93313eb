"""Typed errors of the gateway. Each carries the context an operator needs, in English and Thai; never a secret."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.errors import NakhonError


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One thing wrong with one field of our own input. `row` is the CSV line number (1 = header) when there is one."""

    field: str
    message: str
    row: int | None = None
    value: str | None = None

    def __str__(self) -> str:
        where = f"line {self.row}, " if self.row is not None else ""
        shown = f" (got {self.value!r})" if self.value is not None else ""
        return f"{where}field {self.field!r}: {self.message}{shown}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GatewayError(NakhonError):
    """Base of the gateway's errors. `code` is short and stable (API clients match on it)."""

    code = "gateway_error"
    status_code = 400
    message_th = "เกิดข้อผิดพลาด"

    def __init__(self, message: str, *, message_th: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        if message_th is not None:
            self.message_th = message_th
        self.context = context

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message, "message_th": self.message_th}
        if self.context:
            body["context"] = self.context
        return body


class InvalidInputError(GatewayError):
    """Our own input is wrong; `problems` names every field (and CSV row) at fault."""

    code = "validation_failed"
    status_code = 422
    message_th = "ข้อมูลไม่ถูกต้อง"

    def __init__(self, problems: list[FieldProblem], message: str | None = None, **context: Any) -> None:
        self.problems = problems
        summary = message or "; ".join(str(p) for p in problems[:5]) + (
            f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        )
        super().__init__(summary, **context)

    def as_dict(self) -> dict[str, Any]:
        body = super().as_dict()
        body["errors"] = [p.as_dict() for p in self.problems]
        return body


class NotFoundError(GatewayError):
    code = "not_found"
    status_code = 404
    message_th = "ไม่พบข้อมูล"


class DeviceNotFoundError(NotFoundError):
    code = "device_not_found"
    message_th = "ไม่พบอุปกรณ์"

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is not registered", device_id=device_id)


class ProfileNotFoundError(NotFoundError):
    code = "profile_not_found"
    message_th = "ไม่พบโปรไฟล์อุปกรณ์"

    def __init__(self, name: str) -> None:
        super().__init__(f"device profile {name!r} does not exist", profile=name)


class TokenNotFoundError(NotFoundError):
    code = "token_not_found"
    message_th = "ไม่พบโทเค็น"

    def __init__(self, name: str) -> None:
        super().__init__(f"API token {name!r} does not exist", token=name)


class ConflictError(GatewayError):
    """The change contradicts what is stored (a duplicate, a profile in use, a retired device)."""

    code = "conflict"
    status_code = 409
    message_th = "ข้อมูลขัดแย้งกับที่มีอยู่"


class ProvisioningError(GatewayError):
    """The broker could not be told about a device (unreachable, refused the command, timed out)."""

    code = "broker_provisioning_failed"
    status_code = 502
    message_th = "ตั้งค่าสิทธิ์ที่โบรกเกอร์ MQTT ไม่สำเร็จ"


class BrokerNotConfiguredError(GatewayError):
    code = "broker_not_configured"
    status_code = 503
    message_th = "ยังไม่ได้ตั้งค่าโบรกเกอร์ MQTT"


__all__ = [
    "BrokerNotConfiguredError",
    "ConflictError",
    "DeviceNotFoundError",
    "FieldProblem",
    "GatewayError",
    "InvalidInputError",
    "NotFoundError",
    "ProfileNotFoundError",
    "ProvisioningError",
    "TokenNotFoundError",
]
