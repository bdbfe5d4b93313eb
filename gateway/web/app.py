"""The console's pages (`/console/...`), mounted on the gateway's app and port: server-rendered, no build step.

Every page needs a staff session (cookie `nakhon_session`, HttpOnly, SameSite=Lax, Secure over TLS); every
POST must carry the session's CSRF token (form field `csrf` or header `X-CSRF-Token`) and, when the browser
sends one, an Origin of this host. Roles are checked on the server for every change, whatever the page showed.
City scope is applied in every query (`views.ConsoleQueries`): a device or alert of another city is "not found".
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import Counter
from pydantic import ValidationError

from core.db import utcnow
from gateway.api.routes import MAX_IMPORT_BYTES
from gateway.errors import FieldProblem, GatewayError
from gateway.registry.csv_import import parse_device_csv
from gateway.registry.schemas import DeviceSpec
from gateway.registry.store import RegistryStore
from gateway.service import DeviceService, IssuedCredentials
from gateway.web.i18n import Words
from gateway.web.users import LANGS, StaffPrincipal, UserStore, csrf_matches
from gateway.web.views import AlertGroup, ConsoleQueries, Filters, GroupOf, default_group_of

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
SESSION_COOKIE = "nakhon_session"
LOGIN_CSRF_COOKIE = "nakhon_login_csrf"
LANG_COOKIE = "nakhon_lang"
MAX_FORM_BYTES = 64 * 1024
FEEDS = ("air", "flood", "energy", "bus")
DURATIONS = ("1h", "2h", "4h", "8h", "24h", "72h")
STATIC = {  # the only files served from static/: nothing else on disk is reachable
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}
LOGINS = Counter("nakhon_console_logins_total", "Console login attempts by outcome (ok, wrong, locked)", ["outcome"])
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show credentials once and per-user data: never cached
}


@dataclass
class Console:
    """What the pages need, passed in by the app shell."""

    registry: RegistryStore
    users: UserStore
    devices: DeviceService
    queries: ConsoleQueries
    alerts: Any  # rules.store.AlertStore, or None when the rules component is not installed
    broker_host: str | None = None  # for the `mosquitto_pub` example; default: the host the page was asked for
    broker_port: int = 1883
    group_of: GroupOf = default_group_of  # as the notifications group alerts (routing_group_of(router))
    now_ns: Callable[[], int] = time.time_ns


class Refused(Exception):
    """A request the console answers with a page instead of doing it (status, message key)."""

    def __init__(self, status: int, key: str) -> None:
        super().__init__(key)
        self.status = status
        self.key = key


class SignInNeeded(Exception):
    """No staff session: a page sends the browser to the login, a fragment (polled by a page) answers 401."""


Handler = Callable[..., Awaitable[Response]]


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(prefix=PREFIX, feeds=FEEDS, durations=DURATIONS)
    return env


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form, or the text fields and the file (`file`, as text) of a multipart one (CSV upload)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    limit = MAX_IMPORT_BYTES if media == "multipart/form-data" else MAX_FORM_BYTES
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, "bad_form")
    try:
        if media == "multipart/form-data":
            return await asyncio.to_thread(_multipart_fields, content_type, bytes(body))
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, "bad_form") from exc


def _multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ValueError("not multipart")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes) and name not in fields:
            fields[name] = payload.decode("utf-8")  # a CSV that is not UTF-8 is refused (UnicodeDecodeError)
    return fields


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not sent by every browser on a same-origin POST: the CSRF token alone decides then
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _page_after(post_path: str) -> str:
    """The page to show again after a POST (`/devices/x/rotate` → `/devices/x`): credentials are never re-shown."""
    for action in ("/rotate", "/retire", "/maintenance"):
        if post_path.endswith(action):
            return post_path.removesuffix(action)
    if post_path.startswith(PREFIX + "/alerts") or post_path == PREFIX + "/silences":
        return PREFIX + "/alerts"
    if post_path in (PREFIX + "/register", PREFIX + "/import"):
        return post_path
    return PREFIX + "/devices"


def _safe_next(value: str | None) -> str:
    """Only a path inside the console (no `//host`, no scheme): no open redirect through `next=`."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/devices"


def build_console_router(console: Console) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    env = _environment()

    def lang_of(request: Request, who: StaffPrincipal | None) -> str:
        if who is not None:
            return who.lang
        chosen = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
        if chosen in LANGS:
            return str(chosen)
        return "en" if request.headers.get("accept-language", "th").lower().startswith("en") else "th"

    def page(
        request: Request, name: str, who: StaffPrincipal | None, csrf: str = "", status: int = 200, **context: Any
    ) -> HTMLResponse:
        words = Words(lang_of(request, who))
        path, query = request.url.path, request.url.query
        if request.method != "GET":  # the language switch returns to a page that can be fetched again
            path, query = _page_after(path), ""
        html = env.get_template(name).render(t=words, who=who, csrf=csrf, lang=words.lang, path=path, query=query,
                                             **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def session_of(request: Request) -> tuple[StaffPrincipal, str] | None:
        return console.users.session(request.cookies.get(SESSION_COOKIE, ""))

    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?next={quote(target)}", status_code=303)

    async def changing(request: Request, *roles: str) -> tuple[StaffPrincipal, str, dict[str, str]]:
        """The session, its CSRF token checked and the role checked, for a POST that changes something."""
        found = session_of(request)
        if found is None:
            raise Refused(401, "bad_form")
        who, csrf = found
        if not _same_origin(request):
            raise Refused(403, "bad_form")
        form = await _form(request)
        if not csrf_matches(csrf, form.get("csrf") or request.headers.get("x-csrf-token")):
            raise Refused(403, "bad_form")
        if roles and not who.has_role(*roles):
            raise Refused(403, "forbidden")
        return who, csrf, form

    def refused(request: Request, exc: Refused) -> HTMLResponse:
        found = session_of(request)
        who, csrf = found if found else (None, "")
        return page(request, "message.html", who, csrf, status=exc.status, key=exc.key)

    def viewer(request: Request, *roles: str) -> tuple[StaffPrincipal, str]:
        """The session of a page or fragment (`SignInNeeded` without one) and, given `roles`, one of them."""
        found = session_of(request)
        if found is None:
            raise SignInNeeded
        if roles and not found[0].has_role(*roles):
            raise Refused(403, "forbidden")
        return found

    def answered(*, fragment: bool = False, errors_as_page: bool = False) -> Callable[[Handler], Handler]:
        """Answer a handler's `SignInNeeded` (login page, or 401 for a fragment) and `Refused` (its message
        page); with `errors_as_page` a GatewayError too (an error page in the person's language)."""

        def wrap(handler: Handler) -> Handler:
            @functools.wraps(handler)
            async def answer(request: Request, **params: Any) -> Response:
                try:
                    return await handler(request, **params)
                except SignInNeeded:
                    return Response(status_code=401) if fragment else to_login(request)
                except Refused as exc:
                    return refused(request, exc)
                except GatewayError as exc:
                    if not errors_as_page:
                        raise
                    return error_page(request, exc)

            return answer

        return wrap

    def done(path: str) -> RedirectResponse:
        """After a change: back to the page it was made on, saying it was done."""
        return RedirectResponse(f"{PREFIX}{path}?done=1", status_code=303)

    # ------------------------------------------------------------------ static files, login, logout, language

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            return Response(status_code=404)
        headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name], headers=headers)

    @router.get("", response_class=HTMLResponse)
    @router.get("/", response_class=HTMLResponse)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/devices", status_code=303)

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "") -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = page(request, "login.html", None, token, next=_safe_next(next), error=None)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request),
                            path=PREFIX, max_age=3600)
        if request.query_params.get("lang") in LANGS:
            response.set_cookie(LANG_COOKIE, request.query_params["lang"], samesite="lax", path=PREFIX,
                                secure=_secure(request), max_age=365 * 86400)
        return response

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = await _form(request)
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        next_path = _safe_next(form.get("next"))
        if not expected or not csrf_matches(expected, form.get("csrf")) or not _same_origin(request):
            return page(request, "login.html", None, expected, status=403, next=next_path, error=("bad_form", {}))
        username = form.get("username", "").strip().lower()[:64]
        outcome = await asyncio.to_thread(console.users.login, username, form.get("password", "")[:1024])
        LOGINS.labels("ok" if outcome.principal else "locked" if outcome.locked_for_s else "wrong").inc()
        if outcome.principal is None:
            error = ("login_locked", {"s": int(outcome.locked_for_s + 0.999)}) if outcome.locked_for_s else (
                "login_failed", {})
            status = 429 if outcome.locked_for_s else 401
            return page(request, "login.html", None, expected, status=status, next=next_path, error=error,
                        username=username)
        cookie, _csrf = await asyncio.to_thread(console.users.create_session, outcome.principal.name)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="lax", secure=_secure(request),
                            path=PREFIX, max_age=int(timedelta(hours=12).total_seconds()))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
        return response

    @router.post("/logout")
    @answered()
    async def logout(request: Request) -> Response:
        await changing(request)
        await asyncio.to_thread(console.users.end_session, request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @router.post("/lang")
    @answered()
    async def set_lang(request: Request) -> Response:
        who, _csrf, form = await changing(request)
        await asyncio.to_thread(console.users.set_lang, who.name, form.get("lang", ""))
        return RedirectResponse(_safe_next(form.get("next")), status_code=303)

    # ------------------------------------------------------------------ devices

    def filters_of(request: Request) -> Filters:
        q = request.query_params

        def pick(name: str, allowed: tuple[str, ...] | None = None) -> str | None:
            value = (q.get(name) or "").strip()[:200] or None
            return value if value is None or allowed is None or value in allowed else None

        return Filters(pick("city"), pick("district"), pick("feed", FEEDS), pick("status", ("active", "retired")))

    @router.get("/devices", response_class=HTMLResponse)
    @answered()
    async def devices_page(request: Request) -> Response:
        who, csrf = viewer(request)
        filters = filters_of(request)
        total, rows = await asyncio.to_thread(console.queries.devices, who, filters)
        cities = await asyncio.to_thread(console.queries.cities, who)
        return page(request, "devices.html", who, csrf, rows=rows, total=total, filters=filters, cities=cities)

    @router.get("/devices/rows", response_class=HTMLResponse)
    @answered(fragment=True)
    async def devices_rows(request: Request) -> Response:
        who, csrf = viewer(request)
        total, rows = await asyncio.to_thread(console.queries.devices, who, filters_of(request))
        return page(request, "_device_rows.html", who, csrf, rows=rows, total=total)

    async def device_context(who: StaffPrincipal, device_id: str) -> dict[str, Any] | None:
        found = await asyncio.to_thread(console.queries.device, who, device_id[:64])
        if found is None:
            return None
        device, row, messages = found
        quarantine = await asyncio.to_thread(console.queries.quarantine, device.device_id)
        alerts = []
        if console.alerts is not None:
            alerts = await asyncio.to_thread(
                console.alerts.list_alerts, states=("pending", "firing"), device_id=device.device_id, limit=50
            )
        audit = await asyncio.to_thread(
            console.registry.audit.find, entity_type="device", entity_id=device.device_id, limit=20
        )
        return {"device": device, "row": row, "messages": messages, "quarantine": quarantine, "alerts": alerts,
                "audit": audit.items}

    @router.get("/devices/{device_id}", response_class=HTMLResponse)
    @answered()
    async def device_page(request: Request, device_id: str) -> Response:
        who, csrf = viewer(request)
        context = await device_context(who, device_id)
        if context is None:
            raise Refused(404, "not_found")
        return page(request, "device.html", who, csrf, done=request.query_params.get("done") == "1", **context)

    @router.get("/devices/{device_id}/live", response_class=HTMLResponse)
    @answered(fragment=True)
    async def device_live(request: Request, device_id: str) -> Response:
        who, csrf = viewer(request)
        context = await device_context(who, device_id)
        if context is None:
            return Response(status_code=404)
        return page(request, "_device_live.html", who, csrf, **context)

    async def scoped_device(who: StaffPrincipal, device_id: str) -> None:
        if await asyncio.to_thread(console.queries.device, who, device_id[:64]) is None:
            raise Refused(404, "not_found")

    @router.post("/devices/{device_id}/maintenance")
    @answered()
    async def maintenance(request: Request, device_id: str) -> Response:
        who, _csrf, form = await changing(request, "engineer")
        await scoped_device(who, device_id)
        until = None
        if form.get("end") != "1":
            try:
                hours = float(form.get("hours", ""))
            except ValueError as exc:
                raise Refused(422, "bad_form") from exc
            if not 0 < hours <= 24 * 30:
                raise Refused(422, "bad_form")
            until = utcnow() + timedelta(hours=hours)
        await asyncio.to_thread(console.registry.devices.set_maintenance, device_id, until, actor=who.actor)
        return done(f"/devices/{quote(device_id)}")

    @router.post("/devices/{device_id}/rotate", response_class=HTMLResponse)
    @answered(errors_as_page=True)
    async def rotate(request: Request, device_id: str) -> Response:
        who, csrf, _ = await changing(request, "engineer")
        await scoped_device(who, device_id)
        credentials = await console.devices.rotate_credentials(device_id, actor=who.actor)
        return page(request, "credentials.html", who, csrf, issued=[_shown(request, credentials)])

    @router.post("/devices/{device_id}/retire")
    @answered(errors_as_page=True)
    async def retire(request: Request, device_id: str) -> Response:
        who, _csrf, _ = await changing(request, "engineer")
        await scoped_device(who, device_id)
        await console.devices.retire_device(device_id, actor=who.actor)
        return done(f"/devices/{quote(device_id)}")

    def error_page(request: Request, exc: GatewayError, status: int | None = None) -> HTMLResponse:
        found = session_of(request)
        who, csrf = found if found else (None, "")
        message = exc.message if (who.lang if who else "th") == "en" else exc.message_th
        return page(request, "message.html", who, csrf, status=status or exc.status_code, key="error", detail=message)

    def _shown(request: Request, credentials: IssuedCredentials) -> dict[str, str]:
        broker_host = console.broker_host or request.url.hostname or "localhost"
        example = (
            f"mosquitto_pub -h {broker_host} -p {console.broker_port} -V mqttv5 -q 1 -i {credentials.username} "
            f"-u {credentials.username} -P '{credentials.password}' -t '{credentials.topic}' "
            f"-m '{_example_payload(credentials.topic)}'"
        )
        return {"username": credentials.username, "password": credentials.password, "topic": credentials.topic,
                "example": example}

    # ------------------------------------------------------------------ register and import

    @router.get("/register", response_class=HTMLResponse)
    @answered()
    async def register_page(request: Request) -> Response:
        who, csrf = viewer(request, "engineer")
        return page(request, "register.html", who, csrf, values={}, errors={})

    @router.post("/register", response_class=HTMLResponse)
    @answered()
    async def register(request: Request) -> Response:
        who, csrf, form = await changing(request, "engineer")
        values = {k: form.get(k, "").strip() for k in
                  ("device_id", "feed", "city", "district", "name", "lat", "lon", "heartbeat_s", "profile")}
        spec_input: dict[str, Any] = {k: v for k, v in values.items() if v != ""}
        errors: dict[str, str] = {}
        spec = None
        try:
            spec = DeviceSpec.model_validate(spec_input)
        except ValidationError as exc:
            for error in exc.errors():
                errors[str(error["loc"][0]) if error["loc"] else "form"] = error["msg"]
        if spec is not None and not who.sees(spec.city):
            errors["city"] = Words(who.lang)("forbidden")
        if spec is None or errors:
            return page(request, "register.html", who, csrf, status=422, values=values, errors=errors)
        try:
            _device, credentials = await console.devices.create_device(spec, actor=who.actor)
        except GatewayError as exc:
            message = exc.message if who.lang == "en" else exc.message_th
            field = str(getattr(exc, "context", {}).get("field", "device_id"))
            return page(request, "register.html", who, csrf, status=exc.status_code, values=values,
                        errors={field: message})
        issued = [_shown(request, credentials)] if credentials else []
        return page(request, "credentials.html", who, csrf, issued=issued, device_id=spec.device_id)

    @router.get("/import", response_class=HTMLResponse)
    @answered()
    async def import_page(request: Request) -> Response:
        who, csrf = viewer(request, "engineer")
        return page(request, "import.html", who, csrf, problems=[], report=None)

    @router.post("/import", response_class=HTMLResponse)
    @answered()
    async def import_csv(request: Request) -> Response:
        who, csrf, form = await changing(request, "engineer")
        text = form.get("file", "").removeprefix("\ufeff")
        problems = await asyncio.to_thread(_import_problems, console, who, text)
        if problems:
            return page(request, "import.html", who, csrf, status=422, problems=problems, report=None)
        try:
            report = await console.devices.import_csv(text, actor=who.actor, atomic=True)
        except GatewayError as exc:
            return error_page(request, exc)
        if report.errors:
            problems = [FieldProblem(e.get("field", ""), e.get("message", ""), e.get("row")) for e in report.errors]
            return page(request, "import.html", who, csrf, status=422, problems=problems, report=None)
        issued = []
        if console.devices.provisioner is not None:
            for device_id in report.created_ids:
                issued.append(_shown(request, await console.devices.rotate_credentials(device_id, actor=who.actor)))
        return page(request, "import.html", who, csrf, problems=[], report=report, issued=issued)

    # ------------------------------------------------------------------ alerts and silences

    def alert_groups(who: StaffPrincipal) -> tuple[list[AlertGroup], list[Any]]:
        if console.alerts is None:
            return [], []
        cities: list[str | None] = list(who.cities) if who.cities else [None]
        alerts = [a for city in cities for a in console.alerts.list_alerts(states=("pending", "firing"), city=city,
                                                                           limit=1000)]
        alerts.sort(key=lambda a: a.fired_ns or a.started_ns, reverse=True)
        groups: dict[str, AlertGroup] = {}
        for alert in alerts:  # newest first, so groups are ordered by their newest alert
            key, title = console.group_of(alert)
            groups.setdefault(key, AlertGroup(key, title)).alerts.append(alert)
        now = console.now_ns()
        silences = [
            s for s in console.alerts.list_silences(now, include_expired=False)
            if not who.cities or any(m.get("name") == "city" and m.get("op") == "=" and m.get("value") in who.cities
                                     for m in s.matchers)
        ]
        return list(groups.values()), silences

    @router.get("/alerts", response_class=HTMLResponse)
    @answered()
    async def alerts_page(request: Request) -> Response:
        who, csrf = viewer(request)
        groups, silences = await asyncio.to_thread(alert_groups, who)
        return page(request, "alerts.html", who, csrf, groups=groups, silences=silences, silence_error=None,
                    done=request.query_params.get("done") == "1")

    @router.get("/alerts/live", response_class=HTMLResponse)
    @answered(fragment=True)
    async def alerts_live(request: Request) -> Response:
        who, csrf = viewer(request)
        groups, silences = await asyncio.to_thread(alert_groups, who)
        return page(request, "_alerts_live.html", who, csrf, groups=groups, silences=silences)

    @router.post("/alerts/{alert_id}/ack")
    @answered()
    async def ack(request: Request, alert_id: str) -> Response:
        who, _csrf, form = await changing(request, "operator", "engineer")
        if console.alerts is None:
            raise Refused(404, "not_found")
        alert = await asyncio.to_thread(console.alerts.get, alert_id[:64])
        if alert is None or not who.sees(alert.city):
            raise Refused(404, "not_found")
        comment = form.get("comment", "").strip()[:2000]
        await asyncio.to_thread(console.alerts.ack, alert.id, who.actor, comment, console.now_ns())
        return done("/alerts")

    @router.post("/silences", response_class=HTMLResponse)
    @answered()
    async def silence(request: Request) -> Response:
        from core.time import NS
        from rules.matchers import Matcher
        from rules.timeutil import parse_duration

        who, csrf, form = await changing(request, "operator", "engineer")
        if console.alerts is None:
            raise Refused(404, "not_found")
        words = Words(who.lang)
        matchers: list[Matcher] = []
        error = None
        for line in form.get("matchers", "").splitlines()[:20]:
            if line.strip():
                try:
                    matchers.append(Matcher.parse(line.strip()))
                except ValueError:
                    error = words("bad_matcher", m=line.strip()[:100])
        duration = form.get("duration", "")
        if error is None and (not matchers or duration not in DURATIONS):
            error = words("bad_form")
        if error is None and who.cities and not any(
            m.name == "city" and m.op == "=" and m.value in who.cities for m in matchers
        ):
            error = words("silence_city_needed")
        if error is not None:
            groups, silences = await asyncio.to_thread(alert_groups, who)
            return page(request, "alerts.html", who, csrf, status=422, groups=groups, silences=silences,
                        silence_error=error, done=False)
        now = console.now_ns()
        ends = now + int(parse_duration(duration) * NS)
        await asyncio.to_thread(
            console.alerts.add_silence, [m.model_dump() for m in matchers], now, ends, who.actor,
            form.get("comment", "").strip()[:2000], now,
        )
        return done("/alerts")

    return router


EXAMPLE_FIELDS = {  # from each feed's testdata/valid.jsonl
    "air": '"pm25_ugm3": 38.2',
    "flood": '"level_m": 2.35, "battery_pct": 87',
    "energy": '"energy_kwh": 15234.75, "power_kw": 42.1',
    "bus": '"lat": 13.0815, "lon": 100.9262, "speed_kmh": 0',
}


def _example_payload(topic: str) -> str:
    parts = topic.split("/")
    fields = EXAMPLE_FIELDS.get(parts[2] if len(parts) > 2 else "", "")
    return "{" + fields + (", " if fields else "") + f'"ts": "{utcnow():%Y-%m-%dT%H:%M:%SZ}"' + "}"


def _import_problems(console: Console, who: StaffPrincipal, text: str) -> list[FieldProblem]:
    """The file's own problems and, for a city-scoped person, every row naming or moving another city's device."""
    parsed = parse_device_csv(text)
    problems = list(parsed.problems)
    if who.cities:
        stored = console.queries.cities_of([row.spec.device_id for row in parsed.rows])
        for row in parsed.rows:
            if not who.sees(row.spec.city):
                problems.append(FieldProblem("city", f"not one of your cities: {row.spec.city}", row=row.line))
            elif row.spec.device_id in stored and not who.sees(stored[row.spec.device_id]):
                problems.append(FieldProblem("device_id", "registered in another city", row=row.line))
    return sorted(problems, key=lambda p: (p.row or 0, p.field))


__all__ = ["PREFIX", "Console", "build_console_router"]
