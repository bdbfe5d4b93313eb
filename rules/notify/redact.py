"""Keep secrets out of logs, the notification log and the API: apprise URLs carry tokens and passwords."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

_SECRET_QUERY = re.compile(r"(token|key|secret|pass|password|pwd|auth|sig|apikey|access)", re.I)


def url_secrets(url: str) -> set[str]:
    """Substrings of an apprise URL that may be secret: user info, path segments, sensitive query values."""
    out: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    if parts.username:
        out.add(parts.username)
        out.add(unquote(parts.username))
    if parts.password:
        out.add(parts.password)
        out.add(unquote(parts.password))
    hostport = parts.netloc.rsplit("@", 1)[-1]
    if ":" in hostport and not hostport.startswith("["):
        port_part = hostport.split(":", 1)[1]
        if not (port_part.isdigit() and len(port_part) <= 5):
            out.add(port_part)  # e.g. tgram://BOTID:TOKEN/...
            out.add(hostport)
    host = parts.hostname or ""
    if host and not re.fullmatch(r"[\w.-]+\.[a-z]{2,}|localhost|[\d.]+|\[[\da-f:]+\]", host, re.I):
        out.add(host)  # e.g. tgram://BOTTOKEN/... — the "host" is the token
        out.add(hostport.split(":", 1)[0])  # as written: `hostname` is lower-cased, a token is not
    for seg in parts.path.split("/"):
        if len(seg) >= 6:
            out.add(seg)
            out.add(unquote(seg))
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if _SECRET_QUERY.search(key) and value:
            out.add(value)
    return {s for s in out if len(s) >= 4}


def redact_url(url: str) -> str:
    """`scheme://***@host:port/***` — enough to tell receivers apart, nothing to reuse."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
        try:
            parts = urlsplit(url)
            host = "***"
        except ValueError:
            return "***"
    secrets = url_secrets(url)
    if host and (host in secrets or any(host in s for s in secrets if ":" in s)):
        host, port = "***", ""
    user = "***@" if parts.username or parts.password else ""
    path = "/***" if parts.path.strip("/") else ""
    return f"{parts.scheme}://{user}{host}{port}{path}"


class Redactor:
    def __init__(self, urls: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for url in urls:
            self._secrets |= url_secrets(url)

    def add(self, secret: str) -> None:
        """A secret known apart from a URL (e.g. a token parsed out of one)."""
        if len(secret) >= 4:
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text
