"""LINE receiver (`line://TOKEN/TARGET[/TARGET…]`, apprise's URL form) over the LINE Messaging API push endpoint.

    POST {api}/v2/bot/message/push   Authorization: Bearer TOKEN   X-Line-Retry-Key: <uuid>
    {"to": "U…|C…|R…", "messages": [{"type": "text", "text": "…"}, … up to 5]}

Several owed messages for one receiver go out as one push of up to 5 text messages (`send_batch`, used by the
receiver's worker), so a storm costs a fifth of the requests. Every push carries a retry key derived from the
batch and the target: a retried push that LINE had in fact accepted answers 409 and is not delivered twice
(https://developers.line.biz/en/docs/messaging-api/retrying-api-request/). Answers: 2xx accepted; 409 (retry key
already accepted) accepted; 408, 429 and 5xx retryable, honouring `Retry-After`; other 4xx permanent (bad token,
bad target); connection errors and timeouts retryable. Text is cut to LINE's 5,000 characters (UTF-16 units).

The token comes from the environment (`line://${LINE_TOKEN}/C123`) or `?token=`; tokens that contain `/` are
recognised by their trailing `=` as apprise does. The API base is `NAKHON_LINE_API_URL` (tests: a local server),
default LINE's. Errors carry the HTTP status and target, never the token.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx

from rules.notify.apprise_notifier import expand_env
from rules.notify.base import NotifyMessage, PermanentNotifyError, RetryableNotifyError
from rules.notify.redact import Redactor, redact_url

LINE_API_URL = "https://api.line.me"
API_URL_ENV = "NAKHON_LINE_API_URL"
PUSH_PATH = "/v2/bot/message/push"
MAX_MESSAGES_PER_PUSH = 5  # LINE: "Max: 5" message objects per push request
MAX_TEXT_UNITS = 5000  # LINE: text message max 5,000 characters, counted in UTF-16 code units
RETRY_KEY_NAMESPACE = uuid.UUID("6f1d8a52-3c2e-4f0b-9a57-1e0c5b7d2a90")
_TARGET_DELIM = re.compile(r"[ \t\r\n,#\\/]+")
SCHEMES = ("line",)
RETRYABLE_STATUS = frozenset({408, 429})  # and 5xx; every other 4xx is permanent


def is_line_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def parse_line_url(url: str) -> tuple[str, list[str]]:
    """(token, targets) of `line://TOKEN/T1/T2?to=T3` — parsed by hand: a token is case-sensitive and may hold `/`."""
    rest = url.split("://", 1)[1] if "://" in url else url
    rest, _, query = rest.partition("?")
    qs = dict(parse_qsl(query))
    segments = [unquote(s) for s in rest.split("/") if s]
    if qs.get("token"):
        token = qs["token"]
    else:
        token, segments = (segments[0] if segments else ""), segments[1:]
        if not token.endswith("="):  # a long-lived token with slashes: it runs up to the segment ending in "="
            for i, seg in enumerate(segments, 1):
                if seg.endswith("="):
                    token, segments = "/".join([token, *segments[:i]]), segments[i:]
                    break
    targets = segments + [t for t in _TARGET_DELIM.split(qs.get("to", "")) if t]
    if not token:
        raise PermanentNotifyError("line:// URL has no channel access token")
    if not targets:
        raise PermanentNotifyError("line:// URL names no user, group or room to push to")
    return token, targets


def line_text(message: NotifyMessage) -> str:
    """LINE has no titles: the title is the first line. At most 5,000 UTF-16 units, cut with an ellipsis."""
    title, body = message.title, message.body
    text = body if not title or body.startswith(title) else f"{title}\n{body}"
    if len(text.encode("utf-16-le")) // 2 <= MAX_TEXT_UNITS:
        return text
    out: list[str] = []
    units = 0
    for ch in text:
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > MAX_TEXT_UNITS - 1:
            break
        out.append(ch)
    return "".join(out) + "…"


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After: 30` or an HTTP date -> seconds from now (None when absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def retry_key(batch_id: str, target: str, chunk: int) -> str:
    """The same batch to the same target is the same push, however often it is retried (and after a restart)."""
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, f"{batch_id}|{target}|{chunk}"))


class LineNotifier:
    """One receiver's `line://` URLs; every target of every URL must accept each push."""

    max_batch = MAX_MESSAGES_PER_PUSH

    def __init__(
        self,
        name: str,
        urls: list[str],
        timeout_s: float = 20.0,
        env: Mapping[str, str] | None = None,
        api_url: str | None = None,
    ) -> None:
        self.name = name
        raw = [expand_env(u, dict(env) if env is not None else None) for u in urls]
        self._redact = Redactor(raw)
        self.safe_urls = [redact_url(u) for u in raw]
        self.config_error: str | None = None
        self._pushes: list[tuple[str, str, str]] = []  # (token, target, what errors call it)
        try:
            for url, safe in zip(raw, self.safe_urls, strict=True):
                token, targets = parse_line_url(url)
                self._redact.add(token)
                self._pushes += [(token, target, f"{safe} to {_short(target)}") for target in targets]
        except PermanentNotifyError as exc:
            self.config_error = str(exc)
        if not raw:
            self.config_error = "no URLs"
        if api_url is None:
            api_url = (os.environ if env is None else env).get(API_URL_ENV) or LINE_API_URL
        self.endpoint = api_url.rstrip("/") + PUSH_PATH
        self.pushes = 0  # push requests made (a burst of n messages should need about n / 5)
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def send(self, message: NotifyMessage) -> None:
        await self.send_batch([message], message.message_id or uuid.uuid4().hex)

    async def send_batch(self, messages: list[NotifyMessage], batch_id: str) -> None:
        if self.config_error:
            raise PermanentNotifyError(self.config_error)
        for chunk in range(0, len(messages), self.max_batch):
            texts = [{"type": "text", "text": line_text(m)} for m in messages[chunk : chunk + self.max_batch]]
            for token, target, label in self._pushes:
                await self._push(token, target, label, texts, retry_key(batch_id, target, chunk))

    async def _push(self, token: str, target: str, label: str, texts: list[dict[str, Any]], key: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "X-Line-Retry-Key": key, "User-Agent": "nakhon-notify"}
        self.pushes += 1
        try:
            response = await self._client.post(self.endpoint, json={"to": target, "messages": texts}, headers=headers)
        except httpx.TimeoutException as exc:
            raise RetryableNotifyError(f"{label}: timeout ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise RetryableNotifyError(self._redact(f"{label}: {type(exc).__name__}: {exc}")) from None
        if response.status_code == 409:
            return  # this retry key was accepted before (the answer to an earlier try was lost): delivered once
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = self._redact(response.text[:200].strip())
        text = f"{label}: HTTP {status}" + (f" {detail}" if detail else "")
        if status in RETRYABLE_STATUS or status >= 500:
            raise RetryableNotifyError(text, retry_after_s=retry_after_s(response.headers.get("Retry-After")))
        raise PermanentNotifyError(text)

    async def close(self) -> None:
        await self._client.aclose()


def _short(target: str) -> str:
    """A target id shortened for errors and logs (enough to tell them apart)."""
    return target if len(target) <= 9 else f"{target[:5]}…{target[-4:]}"
