"""Webhook receiver (`json://host:port/path`, `jsons://` for HTTPS): POSTs the structured payload
(rules/notify/payload.py, versioned) with the human text in `title` / `message`, over one kept-alive connection.

URL forms follow apprise's `json://` so existing routing files keep working: `json://user:pass@host/path` (basic
auth), `?+X-Header=value` (extra header). Answers: 2xx accepted; 408, 425, 429 and 5xx retryable; other 4xx
permanent; connection errors and timeouts retryable. Errors carry the HTTP status, never the URL's secrets.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from rules.notify.apprise_notifier import expand_env
from rules.notify.base import NotifyMessage, PermanentNotifyError, RetryableNotifyError
from rules.notify.redact import Redactor, redact_url

RETRYABLE_STATUS = frozenset({408, 425, 429})
SCHEMES = ("json", "jsons")


def is_webhook_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def classify_status(status: int) -> type[RetryableNotifyError] | type[PermanentNotifyError] | None:
    """None for success; which error a status means otherwise."""
    if 200 <= status < 300:
        return None
    if status in RETRYABLE_STATUS or status >= 500:
        return RetryableNotifyError
    return PermanentNotifyError


class _Target:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = "https" if parts.scheme.lower() == "jsons" else "http"
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        self.headers: dict[str, str] = {"User-Agent": "nakhon-notify"}
        query: list[tuple[str, str]] = []
        # not parse_qsl: it reads "+" as a space, and "+Header=value" is how apprise URLs name headers
        pairs = [(unquote(k), unquote(v)) for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)]
        for key, value in pairs:
            if key.startswith("+"):
                self.headers[key[1:]] = value
            elif key.startswith("-") or key in ("format", "overflow", "method"):
                continue  # apprise options without meaning here
            else:
                query.append((key, value))
        qs = "&".join(f"{k}={v}" for k, v in query)
        self.endpoint = f"{scheme}://{host}{port}{parts.path or '/'}" + (f"?{qs}" if qs else "")
        self.auth: httpx.BasicAuth | None = (
            httpx.BasicAuth(unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        )


class WebhookNotifier:
    """One receiver's webhook URLs; every URL must accept the message."""

    def __init__(self, name: str, urls: list[str], timeout_s: float = 20.0, env: dict[str, str] | None = None) -> None:
        self.name = name
        raw = [expand_env(u, env) for u in urls]
        self._redact = Redactor(raw)
        self.safe_urls = [redact_url(u) for u in raw]
        self._targets = [_Target(u) for u in raw]
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def send(self, message: NotifyMessage) -> None:
        body: dict[str, Any] = dict(message.payload)
        body.setdefault("title", message.title)
        body.setdefault("message", message.body)
        for target, safe in zip(self._targets, self.safe_urls, strict=True):
            try:
                response = await self._client.post(
                    target.endpoint, json=body, headers=target.headers, auth=target.auth or httpx.USE_CLIENT_DEFAULT
                )
            except httpx.TimeoutException as exc:
                raise RetryableNotifyError(f"{safe}: timeout ({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise RetryableNotifyError(self._redact(f"{safe}: {type(exc).__name__}: {exc}")) from None
            error = classify_status(response.status_code)
            if error is not None:
                detail = self._redact(response.text[:200].strip())
                raise error(f"{safe}: HTTP {response.status_code}" + (f" {detail}" if detail else ""))

    async def close(self) -> None:
        await self._client.aclose()
