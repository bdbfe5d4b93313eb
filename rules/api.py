"""HTTP API of alerts, silences and the notification log (mounted by the gateway's `create_app(extra_routers=...)`).

GET    /api/v1/alerts?state=&severity=&device_id=&rule=&city=&feed=&limit=
GET    /api/v1/alerts/{id}
POST   /api/v1/alerts/{id}/ack          {"comment": "..."}            (operator)
GET    /api/v1/silences?active=true
POST   /api/v1/silences                 {"matchers": ["device_id=bus-7", "severity=~warning|info"],
                                         "starts_at"?, "ends_at" | "duration": "2h", "creator"?, "comment"} (operator)
DELETE /api/v1/silences/{id}            (operator; expires it, kept for the record)
GET    /api/v1/notifications?failed=true&receiver=&alert_id=
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field, field_validator

from rules.matchers import Matcher
from rules.store import STATES, AlertStore
from rules.timeutil import NS, Clock, ns_from_datetime, parse_duration

# the gateway's roles are admin, engineer, operator, viewer
VIEW_ROLES = ("viewer", "operator", "engineer", "admin")
OPERATE_ROLES = ("operator", "engineer", "admin")


class AckBody(BaseModel):
    comment: str = Field("", max_length=2000)


class SilenceBody(BaseModel):
    matchers: list[str | Matcher] = Field(min_length=1)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    duration: str | None = None  # e.g. "2h" instead of ends_at
    creator: str | None = None
    comment: str = Field("", max_length=2000)

    @field_validator("matchers")
    @classmethod
    def _parse(cls, v: list[str | Matcher]) -> list[str | Matcher]:
        return [Matcher.parse(m) if isinstance(m, str) else m for m in v]


def principal_name(principal: Any) -> str:
    """Who did it, from whatever the gateway's `require_role` dependency returns."""
    if isinstance(principal, str) and principal:
        return principal
    if isinstance(principal, dict):
        for key in ("username", "name", "sub", "subject", "id"):
            if principal.get(key):
                return str(principal[key])
    for attr in ("username", "name", "subject", "sub", "id"):
        value = getattr(principal, attr, None)
        if value:
            return str(value)
    return "api"


def build_router(store: AlertStore, require_role: Callable[..., Any], *, clock: Clock | None = None) -> APIRouter:
    now_ns: Callable[[], int] = clock.now_ns if clock is not None else time.time_ns
    router = APIRouter(prefix="/api/v1", tags=["alerts"])
    viewer = Depends(require_role(*VIEW_ROLES))
    operator = Depends(require_role(*OPERATE_ROLES))

    @router.get("/alerts")
    def list_alerts(
        state: str | None = None,
        severity: str | None = None,
        device_id: str | None = None,
        rule: str | None = None,
        city: str | None = None,
        feed: str | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        _who: Any = viewer,
    ) -> list[dict[str, Any]]:
        if state is not None and state not in (*STATES, "open"):
            raise HTTPException(422, f"state must be one of {', '.join(STATES)}, open")
        states = ("pending", "firing") if state == "open" else None
        alerts = store.list_alerts(
            state=None if state == "open" else state,
            states=states,
            severity=severity,
            device_id=device_id,
            rule=rule,
            city=city,
            feed=feed,
            limit=limit,
        )
        return [a.to_dict() for a in alerts]

    @router.get("/alerts/{alert_id}")
    def get_alert(alert_id: str, _who: Any = viewer) -> dict[str, Any]:
        alert = store.get(alert_id)
        if alert is None:
            raise HTTPException(404, "no such alert")
        return alert.to_dict()

    @router.post("/alerts/{alert_id}/ack")
    def ack_alert(alert_id: str, body: AckBody | None = None, who: Any = operator) -> dict[str, Any]:
        alert = store.ack(alert_id, principal_name(who), body.comment if body else "", now_ns())
        if alert is None:
            raise HTTPException(404, "no such alert")
        return alert.to_dict()

    @router.get("/silences")
    def list_silences(active: bool = False, _who: Any = viewer) -> list[dict[str, Any]]:
        now = now_ns()
        silences = store.list_silences(now if active else None, include_expired=not active)
        return [dict(s.to_dict(), active=s.active(now)) for s in silences]

    @router.post("/silences", status_code=201)
    def add_silence(body: SilenceBody, who: Any = operator) -> dict[str, Any]:
        now = now_ns()
        starts = ns_from_datetime(body.starts_at) if body.starts_at else now
        if body.ends_at is not None:
            ends = ns_from_datetime(body.ends_at)
        elif body.duration is not None:
            try:
                ends = starts + int(parse_duration(body.duration) * NS)
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from exc
        else:
            raise HTTPException(422, "give ends_at or duration")
        if ends <= starts:
            raise HTTPException(422, "a silence must end after it starts")
        matchers = [m.model_dump() for m in body.matchers if isinstance(m, Matcher)]
        silence = store.add_silence(matchers, starts, ends, body.creator or principal_name(who), body.comment, now)
        return dict(silence.to_dict(), active=silence.active(now))

    @router.delete("/silences/{silence_id}")
    def expire_silence(silence_id: str, _who: Any = operator) -> dict[str, Any]:
        now = now_ns()
        silence = store.expire_silence(silence_id, now)
        if silence is None:
            raise HTTPException(404, "no such silence")
        return dict(silence.to_dict(), active=silence.active(now))

    @router.get("/notifications")
    def list_notifications(
        failed: bool | None = None,
        receiver: str | None = None,
        alert_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        _who: Any = viewer,
    ) -> list[dict[str, Any]]:
        notes = store.list_notifications(failed=failed, receiver=receiver, alert_id=alert_id, limit=limit)
        return [n.to_dict() for n in notes]

    return router
