"""InfluxV1Sink: line protocol over the v1 `/write` API (InfluxDB 1.x, 2.x via DBRP mappings, 3.x Core/Enterprise).

    sink = InfluxV1Sink("http://127.0.0.1:8086", "nakhon", username="writer", password="...")
    await sink.write(points)          # one POST /write?db=nakhon&precision=ns, gzipped

Status mapping (one attempt; the batch writer retries):
- 2xx → stored.
- 5xx, 429, connection errors, timeouts → `SinkUnavailable`. InfluxDB 1.6 answers `500 engine: error syncing
  wal` under load although the points are usually stored: re-writing them is idempotent, so 500 is retryable.
- 401/403 (credentials) and 404 (database not found) → `SinkConfigError` (a `SinkRejected`).
- 413 → `SinkBodyTooLarge`: the server's body limit, not the points' fault; the writer shrinks its batches.
- other 4xx → `SinkRejected` with the server's message. `400 partial write: ...` means the other points WERE
  written. The answer names the cause, and the refused points are found from it without more writes: a
  `field type conflict: input field "f" on measurement "m" is type float, already exists as type string
  dropped=N` refuses exactly the points of `m` whose `f` is not a string (when they are N, the rest are
  stored: `rest_stored`); `unable to parse '<line>'` names the line. Otherwise the writer bisects.
- a point the line protocol cannot express (NaN, ...) is refused before sending: the others are written and
  `SinkRejected.bad_indexes` names the refused ones.

Auth: `token` → `Authorization: Token <token>`; `username`/`password` → HTTP basic auth. Credentials are never
put in the URL, and every error message is scrubbed of them.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import Sequence
from typing import Any

import httpx

from collectors.errors import SinkBodyTooLarge, SinkRejected, SinkUnavailable
from collectors.lineprotocol import LineProtocolError, encode_batch, encode_point
from collectors.sinks.base import SinkConfigError
from core.model import Point

__all__ = ["InfluxV1Sink"]

_INTO = re.compile(r"\bINTO\b", re.IGNORECASE)
_TYPE_CONFLICT = re.compile(
    r'field type conflict: input field "(?P<field>(?:[^"\\]|\\.)*)" on measurement "(?P<measurement>(?:[^"\\]|\\.)*)"'
    r" is type \w+, already exists as type (?P<existing>\w+)"
)
_UNPARSABLE = re.compile(r"unable to parse '(?P<line>.*?)': ")
_DROPPED = re.compile(r"dropped=(\d+)")
_INFLUX_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string"}
_THREAD_ENCODE_MIN = 500  # encode/gzip bigger batches in a worker thread so the loop keeps serving


class InfluxV1Sink:
    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        retention_policy: str | None = None,
        gzip: bool = True,
        timeout_s: float = 10.0,
        max_connections: int = 4,
        name: str = "influxdb",
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.username or parsed.password:  # credentials in the URL: move them out of it
            username = username or parsed.username
            password = password or parsed.password
            parsed = parsed.copy_with(username=None, password=None)
        self.name = name
        self.url = str(parsed).rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.gzip = gzip
        self._secrets = [s for s in (password, token) if s]
        headers = {"User-Agent": "nakhon-collectors"}
        if token:
            headers["Authorization"] = f"Token {token}"
        auth = httpx.BasicAuth(username, password or "") if username and not token else None
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._params = {"db": database, "precision": "ns"}
        if retention_policy:
            self._params["rp"] = retention_policy

    def __repr__(self) -> str:
        return f"InfluxV1Sink({self.url!r}, {self.database!r})"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _body(self, points: Sequence[Point]) -> tuple[bytes, list[int]]:
        """The request body and the indexes of points the line protocol refused (left out of the body)."""
        try:
            body = encode_batch(points)
        except LineProtocolError:
            lines: list[str] = []
            bad: list[int] = []
            for i, p in enumerate(points):
                try:
                    lines.append(encode_point(p))
                except LineProtocolError:
                    bad.append(i)
            body = "\n".join(lines).encode("utf-8")
            return (gzip.compress(body, compresslevel=1) if self.gzip and body else body), bad
        return (gzip.compress(body, compresslevel=1) if self.gzip else body), []

    async def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        if len(points) >= _THREAD_ENCODE_MIN:
            body, bad = await asyncio.to_thread(self._body, points)
        else:
            body, bad = self._body(points)
        if len(bad) < len(points):
            headers = {"Content-Type": "text/plain; charset=utf-8"}
            if self.gzip:
                headers["Content-Encoding"] = "gzip"
            try:
                response = await self._client.post("/write", params=self._params, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                raise SinkUnavailable(f"{self.name} {self.url}: write timed out ({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise SinkUnavailable(
                    f"{self.name} {self.url}: write failed: {type(exc).__name__}: {self._scrub(str(exc))}"
                ) from None
            try:
                self._check(response, "write", len(points) - len(bad))
            except SinkRejected as exc:
                named = _refused_by_answer(str(exc), points, set(bad))
                if not named:
                    raise
                raise SinkRejected(str(exc), sorted(set(bad) | named.indexes), rest_stored=named.rest_stored) from None
        if bad:
            try:
                encode_point(points[bad[0]])
            except LineProtocolError as exc:
                reason = exc.reason if exc.key is None else f"{exc.reason} (key {exc.key!r})"
            raise SinkRejected(
                f"{self.name}: partial write: line protocol refused {len(bad)} point(s): {reason}", bad_indexes=bad
            )

    async def write_lines(self, lines: Sequence[bytes]) -> None:
        """Write line-protocol lines as they are (replaying quarantined points); errors as `write`."""
        body = b"\n".join(lines)
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        try:
            response = await self._client.post("/write", params=self._params, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SinkUnavailable(f"{self.name} {self.url}: write failed: {type(exc).__name__}") from None
        self._check(response, "write", len(lines))

    def _check(self, response: httpx.Response, what: str, n_points: int) -> None:
        status = response.status_code
        if status < 300:
            return
        message = self._server_message(response)
        context = (
            f"{self.name} {self.url}: {what} of {n_points} points to db {self.database!r}: HTTP {status}: {message}"
        )
        if status >= 500 or status == 429:
            raise SinkUnavailable(context)
        if status == 413:
            raise SinkBodyTooLarge(context)
        if status in (401, 403) or (status == 404 and "database not found" in message):
            raise SinkConfigError(context)
        raise SinkRejected(context)

    def _server_message(self, response: httpx.Response) -> str:
        text = ""
        try:
            data = response.json()
            if isinstance(data, dict):
                text = str(data.get("error") or data.get("message") or "")
        except ValueError:
            pass
        if not text:
            text = response.text
        text = text.strip().replace("\n", " ")
        return self._scrub(text[:500])

    async def ping(self) -> bool:
        try:
            response = await self._client.get("/ping")
        except httpx.HTTPError:
            return False
        return response.status_code in (200, 204)

    async def query(self, influxql: str, *, epoch: str = "ns") -> list[dict[str, Any]]:
        """Run a read-only InfluxQL query (SELECT/SHOW only, no INTO); rows as dicts with the series tags merged."""
        for statement in filter(None, (s.strip() for s in influxql.split(";"))):
            words = statement.split(None, 1)
            if words[0].upper() not in ("SELECT", "SHOW") or _INTO.search(statement):
                raise SinkRejected(f"{self.name}: query refused: only read-only SELECT/SHOW statements are allowed")
        params = {"db": self.database, "q": influxql, "epoch": epoch}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        try:
            response = await self._client.get("/query", params=params)
        except httpx.HTTPError as exc:
            raise SinkUnavailable(f"{self.name} {self.url}: query failed: {type(exc).__name__}") from None
        self._check(response, "query", 0)
        rows: list[dict[str, Any]] = []
        for result in response.json().get("results", []):
            if "error" in result:
                raise SinkRejected(f"{self.name}: query error: {self._scrub(str(result['error']))}")
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    rows.append(row)
        return rows

    async def close(self) -> None:
        await self._client.aclose()


class _Named:
    def __init__(self, indexes: set[int], rest_stored: bool) -> None:
        self.indexes = indexes
        self.rest_stored = rest_stored

    def __bool__(self) -> bool:
        return bool(self.indexes)


def _refused_by_answer(message: str, points: Sequence[Point], unsent: set[int]) -> _Named:
    """The points InfluxDB's partial-write answer says it refused (see the module docstring)."""
    if "partial write" not in message:
        return _Named(set(), False)
    dropped_match = _DROPPED.search(message)
    dropped = int(dropped_match.group(1)) if dropped_match else None
    conflict = _TYPE_CONFLICT.search(message)
    if conflict is not None:
        field = conflict.group("field").replace('\\"', '"')
        measurement = conflict.group("measurement").replace('\\"', '"')
        existing = conflict.group("existing")
        indexes = {
            i for i, p in enumerate(points)
            if i not in unsent and p.measurement == measurement and field in p.fields
            and _INFLUX_TYPES.get(type(p.fields[field])) != existing
        }
        return _Named(indexes, dropped is not None and len(indexes) >= dropped)
    unparsable = _UNPARSABLE.search(message)
    if unparsable is not None:
        line = unparsable.group("line")
        for i, p in enumerate(points):
            if i in unsent:
                continue
            try:
                if encode_point(p) == line:
                    return _Named({i}, False)  # other unparsable lines may follow: the rest is re-written
            except LineProtocolError:
                continue
    return _Named(set(), False)
