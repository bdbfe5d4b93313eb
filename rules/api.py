"""HTTP API of alerts, silences and the notification log (mounted by the gateway's `create_app(extra_routers=...)`).

GET    /api/v1/alerts?state=&severity=&device_id=&rule=&city=&feed=&limit=
GET    /api/v1/alerts/{id}
POST   /api/v1/alerts/{id}/ack          {"comment": "..."}            (operator)
GET    /api/v1/silences?active=true
POST   /api/v1/silences                 {"matchers": ["device_id=bus-7", "severity=~warning|info"],
                                         "starts_at"?, "ends_at" | "duration": "2h", "creator"?, "comment"} (operator)
DELETE /api/v1/silences/{id}            (operator; expires it, kept for the record)
GET    /api/v1/notifications?failed=true&receiver=&alert_id=

Signed acknowledge links (rules/acklink.py; no bearer token: the signature is the credential):
GET    /api/v1/alerts/{id}/ack-link?r=&exp=&sig=   bilingual HTML page: the alert and a confirm button (no change:
                                                 mail scanners and LINE's link preview fetch links)
POST   /api/v1/alerts/{id}/ack-link                form r, exp, sig, comment?: acknowledges as `link:{receiver}`
Bad or expired signature: 403 (the page says only "invalid or expired"); unknown alert: 404.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from rules.acklink import PAGE_HEADERS, AckLinkSigner, AckPages, acknowledge_once
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


MAX_FORM_BYTES = 64 * 1024
MAX_COMMENT_CHARS = 2000


async def _read_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form body (python-multipart is not needed for it); None when too big or malformed."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not body or content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


def build_router(
    store: AlertStore,
    require_role: Callable[..., Any],
    *,
    clock: Clock | None = None,
    ack_links: AckLinkSigner | None = None,
) -> APIRouter:
    """The alerts API; with `ack_links`, also the signed acknowledge-link page (GET) and its confirm (POST)."""
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

    if ack_links is not None:
        _add_ack_link_routes(router, store, ack_links, now_ns)

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


def _add_ack_link_routes(
    router: APIRouter, store: AlertStore, signer: AckLinkSigner, now_ns: Callable[[], int]
) -> None:
    pages = AckPages()

    def page(status: int, name: str, alert: Any = None, **kw: Any) -> HTMLResponse:
        return HTMLResponse(pages.render(name, alert, **kw), status_code=status, headers=PAGE_HEADERS)

    @router.get("/alerts/{alert_id}/ack-link", response_class=HTMLResponse, include_in_schema=False)
    def ack_link_page(alert_id: str, r: str = "", exp: str = "", sig: str = "") -> HTMLResponse:
        """The alert and a confirm button. Changes nothing (link previews and mail scanners fetch links)."""
        link = signer.verify(alert_id, r, exp, sig, now_ns())
        if link is None:
            return page(403, "invalid")
        alert = store.get(alert_id)
        if alert is None:
            return page(404, "missing")
        if alert.acknowledged:
            return page(200, "already", alert)
        return page(200, "confirm", alert, receiver=link.receiver, exp=link.exp, sig=sig)

    @router.post("/alerts/{alert_id}/ack-link", response_class=HTMLResponse, include_in_schema=False)
    async def ack_link_confirm(alert_id: str, request: Request) -> HTMLResponse:
        """The confirm button: acknowledges as `link:{receiver}` (the first acknowledgement stands)."""
        form = await _read_form(request)
        if form is None:
            return page(400, "bad")
        query = request.query_params

        def field(name: str) -> str:
            return form.get(name) or query.get(name) or ""

        sig = field("sig")
        link = signer.verify(alert_id, field("r"), field("exp"), sig, now_ns())
        if link is None:
            return page(403, "invalid")
        comment = form.get("comment", "").strip()[:MAX_COMMENT_CHARS]
        alert, acknowledged = await run_in_threadpool(
            acknowledge_once, store, alert_id, f"link:{link.receiver}", comment, now_ns()
        )
        if alert is None:
            return page(404, "missing")
        return page(200, "done" if acknowledged else "already", alert)
