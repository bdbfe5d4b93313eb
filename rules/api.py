"""HTTP API of alerts, silences and the notification log (mounted by the gateway's `create_app(extra_routers=...)`).

GET    /api/v1/alerts?state=&severity=&device_id=&rule=&city=&feed=&limit=
GET    /api/v1/alerts/{id}
POST   /api/v1/alerts/{id}/ack          {"comment": "..."}            (operator)
GET    /api/v1/silences?active=true
POST   /api/v1/silences                 {"matchers": ["device_id=bus-7", "severity=~warning|info"],
                                         "starts_at"?, "ends_at" | "duration": "2h", "comment"} (operator)
DELETE /api/v1/silences/{id}            (operator; expires it, kept for the record)
GET    /api/v1/notifications?failed=true&receiver=&alert_id=

Signed acknowledge links (rules/acklink.py; no bearer token: the signature is the credential):
GET    /api/v1/alerts/{id}/ack-link?r=&exp=&sig=   bilingual HTML page: the alert and a confirm button (no change:
                                                 mail scanners and LINE's link preview fetch links)
POST   /api/v1/alerts/{id}/ack-link                form r, exp, sig, comment?: acknowledges as `link:{receiver}`
Bad or expired signature: 403 (the page says only "invalid or expired"); unknown alert: 404.

Who acknowledged or silenced is the authenticated caller, never a body field (`created_by` cannot be set), and
each ack, silence and expiry goes to the audit log when `build_router(audit=...)` is given. A caller limited to
some cities (its principal's `cities`) sees and acts on only their alerts, and its silences must name one of
them (`city=...`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator
from starlette.concurrency import run_in_threadpool

from core.time import NS
from rules.acklink import PAGE_HEADERS, AckLinkSigner, AckPages, acknowledge_once
from rules.matchers import _TEXT as MATCHER_TEXT
from rules.matchers import MATCHABLE, Matcher
from rules.store import STATES, AlertStore
from rules.timeutil import Clock, ns_from_datetime, parse_duration

# the gateway's roles are admin, engineer, operator, viewer
VIEW_ROLES = ("viewer", "operator", "engineer", "admin")
OPERATE_ROLES = ("operator", "engineer", "admin")


class AckBody(BaseModel):
    comment: str = Field("", max_length=2000)


# The text form the schema states (`Matcher.parse` reads the same); whether a regex compiles is checked after.
MatcherText = Annotated[
    str, StringConstraints(pattern=MATCHER_TEXT.pattern.replace("([a-z_]+)", f"({'|'.join(MATCHABLE)})", 1))
]


def _text_only(value: Any) -> Any:
    """pydantic would read 0 or "0" as seconds since 1970; a silence's times are ISO 8601 text, as documented."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("a time is ISO 8601 text, e.g. 2026-11-22T08:00:00+07:00")
    return value


TextTime = Annotated[datetime, BeforeValidator(_text_only)]


class SilenceBody(BaseModel):
    # Unknown keys are refused: a caller sending `creator` learns that it cannot choose who made the silence.
    model_config = ConfigDict(extra="forbid")

    matchers: list[MatcherText | Matcher] = Field(min_length=1)
    starts_at: TextTime | None = None
    ends_at: TextTime | None = None
    duration: str | None = None  # e.g. "2h" instead of ends_at
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


def principal_actor(principal: Any) -> str:
    """The audit log's actor for the caller ("token:ops-1"), falling back to its name."""
    actor = getattr(principal, "actor", None)
    return str(actor) if actor else principal_name(principal)


def principal_cities(principal: Any) -> frozenset[str] | None:
    """The cities the caller is limited to; None: every city (also for principals that carry no scope)."""
    cities = getattr(principal, "cities", None)
    return frozenset(cities) if cities is not None else None


def silence_cities(matchers: list[dict[str, Any]]) -> set[str]:
    return {str(m.get("value")) for m in matchers if m.get("name") == "city" and m.get("op", "=") == "="}


AuditHook = Callable[..., None]  # (actor=, action=, entity_type=, entity_id=, before=, after=) like record_audit


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
    audit: AuditHook | None = None,
) -> APIRouter:
    """The alerts API; with `ack_links`, also the signed acknowledge-link page (GET) and its confirm (POST);
    with `audit`, acknowledgements and silences are written to the audit log."""
    now_ns: Callable[[], int] = clock.now_ns if clock is not None else time.time_ns

    def record(who: Any, action: str, entity_type: str, entity_id: str, after: dict[str, Any]) -> None:
        if audit is not None:
            audit(actor=principal_actor(who), action=action, entity_type=entity_type, entity_id=entity_id,
                  before=None, after=after)

    def visible_alert(alert_id: str, who: Any) -> Any:
        alert = store.get(alert_id)
        cities = principal_cities(who)
        if alert is None or (cities is not None and alert.city not in cities):
            raise HTTPException(404, "no such alert")
        return alert

    def visible_silence(silence: Any, who: Any) -> bool:
        cities = principal_cities(who)
        if cities is None:
            return True
        named = silence_cities(list(silence.matchers))
        return bool(named) and named <= cities
    router = APIRouter(prefix="/api/v1", tags=["alerts"])
    viewer = Depends(require_role(*VIEW_ROLES))
    operator = Depends(require_role(*OPERATE_ROLES))

    @router.get("/alerts")
    def list_alerts(
        state: Literal["pending", "firing", "resolved", "open"] | None = None,
        severity: str | None = None,
        device_id: str | None = None,
        rule: str | None = None,
        city: str | None = None,
        feed: str | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        who: Any = viewer,
    ) -> list[dict[str, Any]]:
        if state is not None and state not in (*STATES, "open"):
            raise HTTPException(422, f"state must be one of {', '.join(STATES)}, open")
        states = ("pending", "firing") if state == "open" else None
        cities = principal_cities(who)
        if cities is not None and city is not None and city not in cities:
            return []
        if cities is not None and city is None and len(cities) == 1:
            city = next(iter(cities))
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
        return [a.to_dict() for a in alerts if cities is None or a.city in cities]

    @router.get("/alerts/{alert_id}")
    def get_alert(alert_id: str, who: Any = viewer) -> dict[str, Any]:
        alert: dict[str, Any] = visible_alert(alert_id, who).to_dict()
        return alert

    @router.post("/alerts/{alert_id}/ack")
    def ack_alert(alert_id: str, body: AckBody | None = None, who: Any = operator) -> dict[str, Any]:
        visible_alert(alert_id, who)
        comment = body.comment if body else ""
        alert = store.ack(alert_id, principal_name(who), comment, now_ns())
        if alert is None:
            raise HTTPException(404, "no such alert")
        record(who, "alert.ack", "alert", alert_id, {"comment": comment, "ack_by": alert.ack_by})
        return alert.to_dict()

    if ack_links is not None:
        _add_ack_link_routes(router, store, ack_links, now_ns, audit)

    @router.get("/silences")
    def list_silences(active: bool = False, who: Any = viewer) -> list[dict[str, Any]]:
        now = now_ns()
        silences = store.list_silences(now if active else None, include_expired=not active)
        return [dict(s.to_dict(), active=s.active(now)) for s in silences if visible_silence(s, who)]

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
        if starts <= -(2**63) or ends >= 2**63:  # stored as 64-bit nanoseconds (years 1678-2262)
            raise HTTPException(422, "a silence must start and end between the years 1678 and 2262")
        matchers = [m.model_dump() for m in body.matchers if isinstance(m, Matcher)]
        cities = principal_cities(who)
        named = silence_cities(matchers)
        if cities is not None and not (named and named <= cities):
            raise HTTPException(
                403, f"this caller is limited to {', '.join(sorted(cities))}: add a matcher city=<one of them>"
            )
        silence = store.add_silence(matchers, starts, ends, principal_name(who), body.comment, now)
        record(who, "silence.create", "silence", silence.id, {"matchers": matchers, "starts_ns": starts,
                                                               "ends_ns": ends, "comment": body.comment})
        return dict(silence.to_dict(), active=silence.active(now))

    @router.delete("/silences/{silence_id}")
    def expire_silence(silence_id: str, who: Any = operator) -> dict[str, Any]:
        now = now_ns()
        existing = store.get_silence(silence_id)
        if existing is None or not visible_silence(existing, who):
            raise HTTPException(404, "no such silence")
        silence = store.expire_silence(silence_id, now)
        if silence is None:
            raise HTTPException(404, "no such silence")
        record(who, "silence.expire", "silence", silence_id, {"ends_ns": silence.ends_ns})
        return dict(silence.to_dict(), active=silence.active(now))

    @router.get("/notifications")
    def list_notifications(
        failed: bool | None = None,
        receiver: str | None = None,
        alert_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        who: Any = viewer,
    ) -> list[dict[str, Any]]:
        cities = principal_cities(who)
        notes = store.list_notifications(failed=failed, receiver=receiver, alert_id=alert_id, limit=limit,
                                         cities=sorted(cities) if cities is not None else None)
        return [n.to_dict() for n in notes]

    return router


def _add_ack_link_routes(
    router: APIRouter,
    store: AlertStore,
    signer: AckLinkSigner,
    now_ns: Callable[[], int],
    audit: AuditHook | None = None,
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
        if acknowledged and audit is not None:
            await run_in_threadpool(
                lambda: audit(actor=f"link:{link.receiver}", action="alert.ack", entity_type="alert",
                              entity_id=alert_id, before=None, after={"comment": comment, "via": "signed link"})
            )
        return page(200, "done" if acknowledged else "already", alert)
