"""InfluxV1Sink and BatchWriter against a real influxd (and a local HTTP app in front of it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from collectors.errors import SinkRejected, SinkUnavailable
from collectors.sinks.base import SinkConfigError
from collectors.sinks.influx import InfluxV1Sink
from collectors.sinks.spool import DiskSpool
from collectors.sinks.writer import BatchWriter
from core.model import Point
from tests.servers import InfluxServer, free_port

from .helpers import T0, LocalApp, influx_points, pt, read_body, respond

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class FlakyProxy:
    """Answers the first `failures` writes with `status`, then forwards requests to influxd."""

    def __init__(self, upstream: str, status: int, failures: int) -> None:
        self.upstream = upstream
        self.status = status
        self.failures = failures
        self.writes: list[int] = []  # status answered to each /write
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.headers.append(headers)
        if scope["path"] == "/write" and self.failures > 0:
            self.failures -= 1
            self.writes.append(self.status)
            await respond(send, self.status, b'{"error":"engine: error syncing wal"}')
            return
        forward = {k: v for k, v in headers.items() if k.lower() in ("content-encoding", "content-type")}
        async with httpx.AsyncClient() as client:
            r = await client.request(
                scope["method"], f"{self.upstream}{scope['path']}", params=scope["query_string"].decode(),
                content=body, headers=forward,
            )
        if scope["path"] == "/write":
            self.writes.append(r.status_code)
        await respond(send, r.status_code, r.content)


async def test_ping_and_query(influx: InfluxServer, measurement: str) -> None:
    sink = InfluxV1Sink(influx.url, influx.database)
    assert await sink.ping() is True
    await sink.write([pt(0, measurement), pt(1, measurement)])
    rows = await sink.query(f'SELECT "pm25", "device_id" FROM "{measurement}"')
    assert [(r["time"], r["pm25"]) for r in rows] == [(pt(0).time_ns, 0), (pt(1).time_ns, 1)]
    with pytest.raises(SinkRejected):
        await sink.query(f'DROP MEASUREMENT "{measurement}"')  # GET /query is read-only
    await sink.close()


async def test_gzip_off_works_too(influx: InfluxServer, measurement: str) -> None:
    sink = InfluxV1Sink(influx.url, influx.database, gzip=False)
    await sink.write([pt(i, measurement) for i in range(3)])
    assert len(influx_points(influx, measurement)) == 3
    await sink.close()


async def test_unreachable_server_is_unavailable() -> None:
    sink = InfluxV1Sink(f"http://127.0.0.1:{free_port()}", "nakhon", timeout_s=2)
    with pytest.raises(SinkUnavailable):
        await sink.write([pt(0)])
    assert await sink.ping() is False
    await sink.close()


async def test_missing_database_is_a_config_error(influx: InfluxServer) -> None:
    sink = InfluxV1Sink(influx.url, "no_such_db")
    with pytest.raises(SinkConfigError, match="database not found"):
        await sink.write([pt(0)])
    await sink.close()


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_writer_retries_5xx_and_429_then_stores(
    influx: InfluxServer, measurement: str, spool_dir: Path, status: int
) -> None:
    proxy = FlakyProxy(influx.url, status, failures=2)
    async with LocalApp(proxy) as app:
        sink = InfluxV1Sink(app.url, influx.database)
        with pytest.raises(SinkUnavailable, match=str(status)):
            await sink.write([pt(0, measurement)])  # one attempt: the sink itself never retries
        proxy.failures = 2
        proxy.writes.clear()
        spool = DiskSpool(spool_dir, 1 << 20)
        writer = BatchWriter(sink, spool, retry_initial_s=0.01, retry_budget_s=10.0)
        futures = [writer.add(pt(i, measurement)) for i in range(100)]
        await asyncio.gather(*futures)
        assert proxy.writes == [status, status, 204]
        assert spool.empty and writer.health()["sink_up"] is True
        await writer.close()
    assert [p.time_ns for p in influx_points(influx, measurement)] == [pt(i).time_ns for i in range(100)]


async def test_writer_isolates_exactly_the_points_influx_refuses(influx: InfluxServer, measurement: str) -> None:
    sink = InfluxV1Sink(influx.url, influx.database)
    await sink.write([Point(measurement, {"device_id": "a"}, {"x": 1.0}, T0)])
    rejected: list[tuple[Point, str]] = []

    async def on_rejected(point: Point, message: str) -> None:
        rejected.append((point, message))

    writer = BatchWriter(sink, None, max_batch_points=40, on_rejected=on_rejected)
    bad = {3, 11, 29}
    points = [
        Point(measurement, {"device_id": "a"}, {"x": "a" if i in bad else float(i)}, T0 + 1 + i) for i in range(40)
    ]
    await asyncio.gather(*[writer.add(p) for p in points])
    await writer.close()
    assert sorted(p.time_ns for p, _ in rejected) == sorted(points[i].time_ns for i in bad)
    assert all("field type conflict" in m and "HTTP 400" in m for _, m in rejected)
    stored = influx_points(influx, measurement)
    assert len(stored) == 1 + 37
    assert all(isinstance(p.fields["x"], float) for p in stored)


async def test_influx_stopped_mid_stream_spools_and_replays_in_order(tmp_path: Path, spool_dir: Path) -> None:
    server = InfluxServer(tmp_path)
    await asyncio.to_thread(server.start)
    try:

        class Recording(InfluxV1Sink):
            accepted: ClassVar[list[list[int]]] = []

            async def write(self, points: Sequence[Point]) -> None:
                await super().write(points)
                self.accepted.append([p.time_ns for p in points])

        sink = Recording(server.url, server.database, timeout_s=2)
        spool = DiskSpool(spool_dir, 1 << 24)
        writer = BatchWriter(sink, spool, max_batch_points=50, flush_interval_s=0.05,
                             retry_initial_s=0.05, retry_max_s=0.5, retry_budget_s=0.3)
        await asyncio.gather(*[writer.add(pt(i, "stream")) for i in range(100)])
        await asyncio.to_thread(server.stop)
        await asyncio.gather(*[writer.add(pt(i, "stream")) for i in range(100, 300)])  # acknowledged: spooled
        assert writer.health()["sink_up"] is False and writer.health()["spool_points"] == 200
        direct = len(sink.accepted)
        await asyncio.to_thread(server.start)  # same port, same data dir
        for _ in range(600):
            if not writer.health()["spooling"]:
                break
            await asyncio.sleep(0.05)
        assert spool.empty and writer.state == "ok"
        replayed = [t for batch in sink.accepted[direct:] for t in batch]
        assert replayed == [pt(i).time_ns for i in range(100, 300)]  # oldest batch first
        await writer.add(pt(300, "stream"))
        await writer.close()
        assert [p.time_ns for p in influx_points(server, "stream")] == [pt(i).time_ns for i in range(301)]
    finally:
        await asyncio.to_thread(server.stop)


async def test_basic_auth_and_wrong_password_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with InfluxServer(tmp_path, auth=True) as server:
        good = InfluxV1Sink(server.url, server.database, username="admin", password="admin-secret")
        await good.write([pt(0, "auth")])
        assert len(influx_points(server, "auth")) == 1
        secret = "wr0ng-Pa55word-XYZ"
        bad = InfluxV1Sink(server.url, server.database, username="admin", password=secret)
        with pytest.raises(SinkRejected) as info:
            await bad.write([pt(1, "auth")])
        assert isinstance(info.value, SinkConfigError)
        assert "401" in str(info.value)
        assert secret not in str(info.value) and secret not in repr(info.value)
        in_url = InfluxV1Sink(f"http://admin:{secret}@127.0.0.1:{server.port}", server.database)
        assert secret not in in_url.url and secret not in repr(in_url)
        with pytest.raises(SinkConfigError) as info2:
            await in_url.write([pt(1, "auth")])
        assert secret not in str(info2.value)
        for s in (good, bad, in_url):
            await s.close()
    assert secret not in caplog.text


async def test_token_goes_in_the_authorization_header(influx: InfluxServer, measurement: str) -> None:
    proxy = FlakyProxy(influx.url, 500, failures=0)
    async with LocalApp(proxy) as app:
        sink = InfluxV1Sink(app.url, influx.database, token="tok-123")
        await sink.write([pt(0, measurement)])
        await sink.close()
    assert proxy.headers[-1]["authorization"] == "Token tok-123"
    assert proxy.headers[-1]["content-encoding"] == "gzip"
