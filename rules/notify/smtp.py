"""Email receiver (`mailto://`, `mailtos://`, apprise's URL form) over one SMTP connection kept open for a burst.

    mailto://[user:pass@]host[:port]?from=alerts@x&to=a@x,b@x[&mode=insecure|starttls|ssl][&name=Sender]

`mailto://` is plain SMTP unless `mode` says otherwise; `mailtos://` is STARTTLS (port 587), `mode=ssl` implicit
TLS (465). A burst of messages reuses the connection (one EHLO / login); a connection the server closed is opened
again once. SMTP 4xx and connection failures are retryable; SMTP 5xx (550 mailbox unavailable, 535 bad login,
554 rejected) is permanent — the error names the code.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from urllib.parse import parse_qsl, unquote, urlsplit

from rules.notify.apprise_notifier import expand_env
from rules.notify.base import NotifyMessage, PermanentNotifyError, RetryableNotifyError
from rules.notify.redact import Redactor, redact_url

SCHEMES = ("mailto", "mailtos")


def is_smtp_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def smtp_error(code: int, text: str) -> RetryableNotifyError | PermanentNotifyError:
    cls = PermanentNotifyError if 500 <= code < 600 else RetryableNotifyError
    return cls(f"SMTP {code} {text}".strip())


class SmtpTarget:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        secure = parts.scheme.lower() == "mailtos"
        self.mode = query.get("mode", "starttls" if secure else "insecure").lower()
        if self.mode not in ("insecure", "starttls", "ssl"):
            raise PermanentNotifyError(f"mailto mode must be insecure, starttls or ssl, not {self.mode!r}")
        self.host = parts.hostname or ""
        self.port = parts.port or {"ssl": 465, "starttls": 587}.get(self.mode, 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = query.get("from") or (f"{self.user}@{self.host}" if self.user else f"nakhon@{self.host}")
        self.sender_name = query.get("name", "nakhon")
        to = query.get("to", "")
        self.to = [a.strip() for a in to.replace(";", ",").split(",") if a.strip()] or [self.sender]


class SmtpNotifier:
    """One receiver: SMTP URLs (all must accept). Sends from a thread; one connection per URL, reused."""

    def __init__(
        self,
        name: str,
        urls: list[str],
        timeout_s: float = 20.0,
        env: dict[str, str] | None = None,
        idle_s: float = 30.0,
    ) -> None:
        self.name = name
        raw = [expand_env(u, env) for u in urls]
        self._redact = Redactor(raw)
        self.safe_urls = [redact_url(u) for u in raw]
        self.timeout_s = timeout_s
        self.idle_s = idle_s
        self._targets = [SmtpTarget(u) for u in raw]
        self._conns: list[smtplib.SMTP | None] = [None] * len(self._targets)
        self._last_used: list[float] = [0.0] * len(self._targets)
        self._lock = threading.Lock()
        self.connections_opened = 0  # how many times a connection was set up (a burst should need one)

    def _connect(self, t: SmtpTarget) -> smtplib.SMTP:
        context = ssl.create_default_context()
        conn: smtplib.SMTP
        if t.mode == "ssl":
            conn = smtplib.SMTP_SSL(t.host, t.port, timeout=self.timeout_s, context=context)
        else:
            conn = smtplib.SMTP(t.host, t.port, timeout=self.timeout_s)
        try:
            conn.ehlo()
            if t.mode == "starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if t.user and t.password:
                conn.login(t.user, t.password)
        except BaseException:
            conn.close()
            raise
        self.connections_opened += 1
        return conn

    def _email(self, t: SmtpTarget, message: NotifyMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = message.title
        mail["From"] = formataddr((t.sender_name, t.sender))
        mail["To"] = ", ".join(t.to)
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(idstring=message.message_id or None, domain="nakhon")
        if message.message_id:
            mail["X-Nakhon-Message-Id"] = message.message_id
        mail.set_content(message.body, charset="utf-8")
        return mail

    def _send_one(self, i: int, message: NotifyMessage) -> None:
        t = self._targets[i]
        mail = self._email(t, message)
        for attempt in (1, 2):
            conn = self._conns[i]
            if conn is not None and time.monotonic() - self._last_used[i] > self.idle_s:
                self._drop(i)  # servers close idle sessions; do not find out in the middle of a send
                conn = None
            fresh = conn is None
            if conn is None:
                conn = self._conns[i] = self._connect(t)
            try:
                refused = conn.send_message(mail, from_addr=t.sender, to_addrs=t.to)
            except smtplib.SMTPServerDisconnected:
                self._drop(i)
                if fresh or attempt == 2:
                    raise
                continue  # the kept connection had gone away: one new connection, then give up
            except smtplib.SMTPRecipientsRefused as exc:
                self._drop(i)
                code, text = next(iter(exc.recipients.values()))
                raise smtp_error(code, _text(text)) from None
            except smtplib.SMTPResponseException as exc:
                self._drop(i)
                raise smtp_error(exc.smtp_code, _text(exc.smtp_error)) from None
            self._last_used[i] = time.monotonic()
            if refused:
                code, text = next(iter(refused.values()))
                raise smtp_error(code, _text(text))
            return

    def _drop(self, i: int) -> None:
        conn, self._conns[i] = self._conns[i], None
        if conn is not None:
            try:
                conn.quit()
            except Exception:
                conn.close()

    def _send(self, message: NotifyMessage) -> None:
        with self._lock:
            for i, safe in enumerate(self.safe_urls):
                try:
                    self._send_one(i, message)
                except (RetryableNotifyError, PermanentNotifyError) as exc:
                    raise type(exc)(self._redact(f"{safe}: {exc}")) from None
                except smtplib.SMTPResponseException as exc:  # during connect / login
                    err = smtp_error(exc.smtp_code, _text(exc.smtp_error))
                    raise type(err)(self._redact(f"{safe}: {err}")) from None
                except (smtplib.SMTPException, OSError) as exc:
                    raise RetryableNotifyError(self._redact(f"{safe}: {type(exc).__name__}: {exc}")) from None

    async def send(self, message: NotifyMessage) -> None:
        await asyncio.to_thread(self._send, message)

    async def close(self) -> None:
        def drop_all() -> None:
            with self._lock:
                for i in range(len(self._conns)):
                    self._drop(i)

        await asyncio.to_thread(drop_all)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
