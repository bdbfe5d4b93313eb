"""Bearer-token authentication and role checks, reusable by any router mounted on the app.

    from gateway.api import require_role
    @router.post("/alerts/{id}/ack")
    def ack(..., who: Principal = Depends(require_role("operator"))): ...

`admin` passes every check. `require_role()` with no roles admits any valid token (read access).

A principal is (name, role, cities): `cities` None means every city; otherwise the routes show and change only
those cities' devices, alerts and silences (`Principal.sees_city`). Other ways of signing in (the web console's
sessions) make the same `Principal`.

Failed authentication is counted (`nakhon_api_auth_failures_total{reason}`) and limited per client address:
after `max_failures` within `window_s`, that address is answered 429 (with `Retry-After`) until the window
has passed, so tokens cannot be guessed at speed.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter

from gateway.errors import GatewayError
from gateway.registry.schemas import ROLES
from gateway.registry.store import RegistryStore

bearer_scheme = HTTPBearer(auto_error=False, description="An API token from `nakhon tokens create`")


AUTH_FAILURES = Counter(
    "nakhon_api_auth_failures",
    "Refused API authentications, by reason (missing, invalid, rate_limited)",
    ["reason"],
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name (recorded as the actor in the audit log), its role, and the cities it
    is limited to (None: every city)."""

    name: str
    role: str
    cities: frozenset[str] | None = None
    kind: str = "token"  # how the caller signed in; the actor is "<kind>:<name>"

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    def sees_city(self, city: str | None) -> bool:
        return self.cities is None or (city is not None and city in self.cities)

    def require_cities(self, cities: Iterable[str]) -> None:
        """403 unless every one of `cities` is in this principal's scope."""
        outside = sorted({c for c in cities if not self.sees_city(c)})
        if outside:
            raise ForbiddenError(
                f"{self.actor} is limited to {', '.join(sorted(self.cities or ()))}: not {', '.join(outside)}",
                message_th="โทเค็นนี้ใช้ได้เฉพาะเมืองที่กำหนดเท่านั้น",
                cities=outside,
            )

    def require_unscoped(self, what: str) -> None:
        """403 for a city-scoped principal: `what` concerns every city."""
        if self.cities is not None:
            raise ForbiddenError(
                f"{what} concerns every city; {self.actor} is limited to {', '.join(sorted(self.cities))}",
                message_th="การดำเนินการนี้เกี่ยวกับทุกเมือง โทเค็นที่จำกัดเมืองจึงทำไม่ได้",
            )


class NotAuthenticatedError(GatewayError):
    code = "not_authenticated"
    status_code = 401
    message_th = "ต้องยืนยันตัวตนด้วยโทเค็น API"
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012 - constant


class ForbiddenError(GatewayError):
    code = "forbidden"
    status_code = 403
    message_th = "สิทธิ์ของโทเค็นนี้ไม่เพียงพอ"


class TooManyAuthFailuresError(GatewayError):
    code = "too_many_failed_authentications"
    status_code = 429
    message_th = "ยืนยันตัวตนผิดพลาดหลายครั้งเกินไป โปรดรอสักครู่แล้วลองใหม่"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"too many failed authentications from this address; retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
        )
        self.headers = {"Retry-After": str(retry_after_s)}


class AuthFailureLimiter:
    """Failed authentications per client address in a fixed window; bounded in the addresses it remembers."""

    def __init__(
        self,
        *,
        max_failures: int = 10,
        window_s: float = 60.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # address -> (window start, count)
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None if it may now."""
        with self._lock:
            entry = self._failures.get(address)
            if entry is None:
                return None
            started, count = entry
            left = started + self.window_s - self._clock()
            if left <= 0:
                del self._failures[address]
                return None
            return max(1, int(left + 0.999)) if count >= self.max_failures else None

    def record_failure(self, address: str) -> None:
        with self._lock:
            now = self._clock()
            started, count = self._failures.pop(address, (now, 0))
            if now - started >= self.window_s:
                started, count = now, 0
            self._failures[address] = (started, count + 1)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)  # the least recently failing address is forgotten


def _limiter(request: Request) -> AuthFailureLimiter:
    limiter = getattr(request.app.state, "auth_limiter", None)
    if limiter is None:
        limiter = request.app.state.auth_limiter = AuthFailureLimiter()
    return limiter


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
        limiter = _limiter(request)
        address = request.client.host if request.client else "unknown"
        wait = limiter.retry_after(address)
        if wait is not None:
            AUTH_FAILURES.labels("rate_limited").inc()
            raise TooManyAuthFailuresError(wait)
        if credentials is None:
            AUTH_FAILURES.labels("missing").inc()
            limiter.record_failure(address)
            raise NotAuthenticatedError("missing bearer token: send `Authorization: Bearer <API token>`")
        store: RegistryStore = request.app.state.registry
        token = store.tokens.authenticate(credentials.credentials)
        if token is None:
            AUTH_FAILURES.labels("invalid").inc()
            limiter.record_failure(address)
            raise NotAuthenticatedError("invalid, revoked or expired API token")
        if token.role not in allowed:
            raise ForbiddenError(
                f"this action requires role {needed}; token {token.name!r} has role {token.role!r}",
                message_th=f"การดำเนินการนี้ต้องใช้สิทธิ์ {needed} แต่โทเค็นนี้มีสิทธิ์ {token.role}",
                required_roles=sorted(allowed, key=ROLES.index),
                token_role=token.role,
            )
        return Principal(token.name, token.role, frozenset(token.cities) if token.cities else None)

    check_token.__name__ = f"require_{'_or_'.join(roles) or 'any_role'}"
    return check_token


__all__ = [
    "AUTH_FAILURES",
    "AuthFailureLimiter",
    "ForbiddenError",
    "NotAuthenticatedError",
    "Principal",
    "TooManyAuthFailuresError",
    "bearer_scheme",
    "require_role",
]
