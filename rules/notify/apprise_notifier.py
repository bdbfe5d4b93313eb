"""A notifier over apprise: email (`mailto://`, `mailtos://`), LINE Messaging API (`line://TOKEN/USER_OR_GROUP`),
Telegram (`tgram://`), SMS gateways (e.g. `twilio://`, `bulksms://`, `smseagle://`), JSON webhooks (`json://`).

apprise only returns success or failure; its per-call log tells why, which is how retryable failures
(connection errors, timeouts, HTTP 5xx / 408 / 429, SMTP 4xx) are told from permanent ones (HTTP 4xx,
SMTP 5xx, a URL apprise does not accept). Every message that leaves this module is redacted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Iterable
from typing import Any

import apprise

from rules.notify.base import NotifyMessage, PermanentNotifyError, RetryableNotifyError
from rules.notify.redact import Redactor, redact_url

log = logging.getLogger(__name__)

_HTTP_STATUS = re.compile(r"error=(\d{3})")
_SMTP_CODE = re.compile(r"\((\d{3}),")
_ENV = re.compile(r"\$\{([A-Z0-9_]+)\}")


def expand_env(url: str, env: dict[str, str] | None = None) -> str:
    """`line://${LINE_TOKEN}/U123` -> the token from the environment (secrets stay out of config files)."""
    source = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in source:
            raise PermanentNotifyError(f"environment variable {m.group(1)} is not set")
        return source[m.group(1)]

    return _ENV.sub(sub, url)


def classify(lines: Iterable[str]) -> type[RetryableNotifyError] | type[PermanentNotifyError]:
    text = "\n".join(lines)
    for code in _HTTP_STATUS.findall(text):
        status = int(code)
        if 400 <= status < 500 and status not in (408, 425, 429):
            return PermanentNotifyError
    for code in _SMTP_CODE.findall(text):
        if code.startswith("5"):
            return PermanentNotifyError
    return RetryableNotifyError


def unthrottle(servers: Iterable[Any]) -> None:
    """Drop apprise's generic pause between two messages of one plugin (`NotifyBase.request_rate_per_sec`, 5.5 s:
    four resolves took 16 s). A plugin that declares its own rate (the channel's real limit) keeps it."""
    generic = getattr(apprise.NotifyBase, "request_rate_per_sec", None)
    for plugin in servers:
        if generic is not None and type(plugin).request_rate_per_sec == generic:
            plugin.request_rate_per_sec = 0


class AppriseNotifier:
    """One receiver: one or more apprise URLs, all of which must accept the message."""

    def __init__(self, name: str, urls: list[str], timeout_s: float = 20.0, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.timeout_s = timeout_s
        raw = [expand_env(u, env) for u in urls]
        self._redact = Redactor(raw)
        self.safe_urls = [redact_url(u) for u in raw]
        self._apprise = apprise.Apprise()
        bad = [redact_url(u) for u in raw if not self._apprise.add(u)]
        unthrottle(self._apprise)
        self.config_error = f"apprise does not accept {', '.join(bad)}" if bad else None
        if not raw:
            self.config_error = "no URLs"

    def _notify(self, message: NotifyMessage) -> None:
        lines: list[str] = []

        def capture(entry: Any, _plugin: Any = None) -> None:
            lines.append(str(getattr(entry, "message", entry)))

        notify_type = {"critical": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING}.get(
            message.severity, apprise.NotifyType.INFO
        )
        if message.kind == "resolved":
            notify_type = apprise.NotifyType.SUCCESS
        try:
            result = self._apprise.notify(
                body=message.body,
                title=message.title,
                notify_type=notify_type,
                body_format=apprise.NotifyFormat.TEXT,
                log_callback=capture,
                log_level=logging.DEBUG,
                timeout=self.timeout_s,
            )
        except TypeError:  # an apprise without per-call logs
            result = self._apprise.notify(body=message.body, title=message.title, notify_type=notify_type)
        if result:
            return
        detail = "; ".join(line for line in lines if line)[-600:] or "apprise reported a failure"
        raise classify(lines)(self._redact(detail))

    async def send(self, message: NotifyMessage) -> None:
        if self.config_error:
            raise PermanentNotifyError(self.config_error)
        await asyncio.to_thread(self._notify, message)
