"""`create_app(store, provisioner)`: the gateway's FastAPI application (OpenAPI at /docs)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.problems import COMMON_ERRORS
from gateway.api.routes import build_router
from gateway.broker.dynsec import Provisioner
from gateway.errors import GatewayError
from gateway.registry.store import RegistryStore
from gateway.service import DeviceService

log = logging.getLogger(__name__)


class UnexpectedErrorMiddleware:
    """A bug must answer 500 with our error shape and log one line naming the route and the exception type, not a
    traceback: database drivers put the statement's row values (names, coordinates, hashes) into their messages."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("unexpected %s answering %s %s", type(exc).__name__, scope.get("method"), scope.get("path"))
            if started:
                raise RuntimeError("response already started when the request failed") from None
            response = JSONResponse(
                {
                    "error": "internal_error",
                    "message": "unexpected error; it was logged without the request's data",
                    "message_th": "เกิดข้อผิดพลาดที่ไม่คาดคิด ระบบบันทึกไว้แล้วโดยไม่เก็บข้อมูลของคำขอ",
                },
                status_code=500,
            )
            await response(scope, receive, send)


def _allowed_methods(request: Request) -> list[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _child = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def _problem_field(loc: tuple[Any, ...]) -> tuple[str, str]:
    """('body', 'site', 'bank_level_m') -> ('body', 'site.bank_level_m')"""
    where = str(loc[0]) if loc else "request"
    name = ".".join(str(part) for part in loc[1:]) or where
    return where, name


def create_app(
    store: RegistryStore,
    provisioner: Provisioner | None,
    *,
    extra_routers: Iterable[APIRouter] = (),
    reserved_ids: frozenset[str] = frozenset(),
) -> FastAPI:
    """`reserved_ids`: the configured broker service accounts and client ids, which no device may be named."""
    app = FastAPI(
        title="nakhon gateway",
        version="1",
        description="Device registry, MQTT credentials, profiles, maintenance and audit for nakhon. "
        "ทะเบียนอุปกรณ์ สิทธิ์ MQTT โปรไฟล์ การบำรุงรักษา และบันทึกการเปลี่ยนแปลง",
    )
    app.state.registry = store
    app.state.provisioner = provisioner
    app.state.device_service = DeviceService(store, provisioner, reserved_ids=reserved_ids)

    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("gateway error: %s", exc)
        headers = getattr(exc, "headers", None)
        return JSONResponse(exc.as_dict(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Routing errors (unknown path, wrong method) and routers' HTTPException in the same shape as ours."""
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names only the first route's method; every method of the path is
            headers["Allow"] = ", ".join(_allowed_methods(request))
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 403: "forbidden",
                 422: "validation_failed"}
        body: dict[str, Any] = {
            "error": codes.get(exc.status_code, "http_error"),
            "message": str(exc.detail),
            "message_th": "ไม่พบข้อมูล" if exc.status_code == 404 else "คำขอไม่ถูกต้อง",
        }
        if exc.status_code == 422:  # a route's own rule, not the request against the schema: no `in`
            body["errors"] = [{"field": "body", "message": str(exc.detail), "row": None}]
        return JSONResponse(body, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for error in exc.errors():
            where, name = _problem_field(tuple(error.get("loc", ())))
            errors.append({"in": where, "field": name, "message": error.get("msg", "invalid"), "row": None})
        summary = "; ".join(f"{e['in']} field {e['field']!r}: {e['message']}" for e in errors[:5])
        return JSONResponse(
            {"error": "validation_failed", "message": summary, "message_th": "ข้อมูลไม่ถูกต้อง", "errors": errors},
            status_code=422,
        )

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Liveness and database reachability (no token needed)."""
        try:
            store.ping()
        except Exception as exc:
            log.warning("registry database unreachable: %s", type(exc).__name__)
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "broker_configured": provisioner is not None})

    app.add_middleware(UnexpectedErrorMiddleware)
    app.include_router(build_router())
    for router in extra_routers:  # the alerts API and others: their errors have the same shape as ours
        app.include_router(router, responses=COMMON_ERRORS)
    return app
