"""Shared helpers of the sink tests: points, reading points back from a real influxd, a local HTTP app."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import uvicorn

from core.model import FieldValue, Point
from tests.servers import InfluxServer, free_port

T0 = 1_763_700_000_000_000_000  # 2025-11-21, ns


def pt(
    i: int, measurement: str = "air_quality", device: str = "air-1", feed: str = "air", **fields: FieldValue
) -> Point:
    return Point(
        measurement,
        {"device_id": device, "feed": feed, "city": "bangkok", "district": "เขต บางรัก"},
        fields or {"pm25": float(i), "n": i},
        T0 + i * 1_000_000,
    )


def influx_field_types(influx: InfluxServer, measurement: str) -> dict[str, str]:
    rows = influx.rows(f'SHOW FIELD KEYS FROM "{measurement}"')
    return {r["fieldKey"]: r["fieldType"] for r in rows}


def influx_points(influx: InfluxServer, measurement: str) -> list[Point]:
    """Everything stored in `measurement`, as Points (types restored from SHOW FIELD KEYS; JSON loses 12.0)."""
    types = influx_field_types(influx, measurement)
    escaped = measurement.replace("\\", "\\\\").replace('"', '\\"')
    response = httpx.get(
        f"{influx.url}/query",
        params={"db": influx.database, "q": f'SELECT * FROM "{escaped}" GROUP BY *', "epoch": "ns"},
        auth=("admin", "admin-secret") if influx.auth else None,
        timeout=30,
    )
    response.raise_for_status()
    out: list[Point] = []
    for result in response.json()["results"]:
        assert "error" not in result, result
        for series in result.get("series", []):
            tags = {k: v for k, v in series.get("tags", {}).items() if v}
            for values in series["values"]:
                row = dict(zip(series["columns"], values, strict=True))
                t = row.pop("time")
                fields: dict[str, FieldValue] = {}
                for k, v in row.items():
                    if v is None:
                        continue
                    fields[k] = float(v) if types.get(k) == "float" else v
                out.append(Point(measurement, tags, fields, t))
    return sorted(out, key=lambda p: (p.time_ns, sorted(p.tags.items())))


App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
               Awaitable[None]]


class LocalApp:
    """A raw ASGI app served by uvicorn on a free loopback port inside the test's event loop."""

    def __init__(self, app: App) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LocalApp:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, body: bytes = b"",
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})
