"""Bearer-token authentication and role checks, reusable by any router mounted on the app.

    from gateway.api import require_role
    @router.post("/alerts/{id}/ack")
    def ack(..., who: Principal = Depends(require_role("operator"))): ...

`admin` passes every check. `require_role()` with no roles admits any valid token (read access).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import GatewayError
from gateway.registry.schemas import ROLES
from gateway.registry.store import RegistryStore

bearer_scheme = HTTPBearer(auto_error=False, description="An API token from `nakhon tokens create`")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name (recorded as the actor in the audit log) and its role."""

    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


class NotAuthenticatedError(GatewayError):
    code = "not_authenticated"
    status_code = 401
    message_th = "ต้องยืนยันตัวตนด้วยโทเค็น API"
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012 - constant


class ForbiddenError(GatewayError):
    code = "forbidden"
    status_code = 403
    message_th = "สิทธิ์ของโทเค็นนี้ไม่เพียงพอ"


def require_role(*roles: str) -> Callable[..., Principal]:
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; roles are {ROLES}")
    allowed = set(ROLES) if not roles else {*roles, "admin"}
    named = [r for r in roles if r != "admin"]
    needed = f"{' or '.join(named)} (or admin)" if named else "admin" if roles else "any"

    def check_token(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
    ) -> Principal:
        if credentials is None:
            raise NotAuthenticatedError("missing bearer token: send `Authorization: Bearer <API token>`")
        store: RegistryStore = request.app.state.registry
        token = store.authenticate(credentials.credentials)
        if token is None:
            raise NotAuthenticatedError("invalid or revoked API token")
        if token.role not in allowed:
            raise ForbiddenError(
                f"this action requires role {needed}; token {token.name!r} has role {token.role!r}",
                message_th=f"การดำเนินการนี้ต้องใช้สิทธิ์ {needed} แต่โทเค็นนี้มีสิทธิ์ {token.role}",
                required_roles=sorted(allowed, key=ROLES.index),
                token_role=token.role,
            )
        return Principal(token.name, token.role)

    check_token.__name__ = f"require_{'_or_'.join(roles) or 'any_role'}"
    return check_token


__all__ = ["ForbiddenError", "NotAuthenticatedError", "Principal", "bearer_scheme", "require_role"]
