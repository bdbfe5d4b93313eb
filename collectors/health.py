"""`/metrics` (Prometheus text format) and `/healthz` on one small asyncio HTTP server.

Kept dependency-free and separate from the gateway's API so a collector replica exposes its own metrics.
`/healthz` answers 200 when every check passes and 503 otherwise, with the checks as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

HealthCheck = Callable[[], dict[str, Any]]
"""Returns {"ok": bool, ...details}."""


class MetricsServer:
    def __init__(self, host: str, port: int, checks: dict[str, HealthCheck]) -> None:
        self.host = host
        self.port = port
        self.checks = checks
        self._server: asyncio.AbstractServer | None = None

    def health(self) -> tuple[bool, dict[str, Any]]:
        results: dict[str, Any] = {}
        healthy = True
        for name, check in self.checks.items():
            try:
                result = check()
            except Exception as exc:  # a failing check is itself unhealthy, never a crash
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            results[name] = result
            healthy = healthy and bool(result.get("ok"))
        return healthy, {"healthy": healthy, "checks": results}

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets and self.port == 0:
            self.port = int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
            elif path in ("/healthz", "/health"):
                healthy, report = self.health()
                status = "200 OK" if healthy else "503 Service Unavailable"
                ctype, body = "application/json", orjson.dumps(report)
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found: try /metrics or /healthz\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
