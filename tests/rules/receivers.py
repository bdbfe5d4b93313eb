"""Real local receivers for integration tests: an aiosmtpd SMTP server and HTTP webhook servers in threads."""

from __future__ import annotations

import email
import email.header
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from tests.servers import free_port


class SmtpServer:
    """aiosmtpd on loopback. `reject_rcpt`: answer RCPT TO with it (e.g. "550 5.1.1 no such mailbox");
    `port`: listen there (a receiver that was down comes back on the same port)."""

    def __init__(self, port: int | None = None, reject_rcpt: str | None = None) -> None:
        self.port = port or free_port()
        self.reject_rcpt = reject_rcpt
        self.messages: list[email.message.Message] = []
        self.envelopes: list[Any] = []
        self.sessions: set[int] = set()  # SMTP connections that delivered mail
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.reject_rcpt:
            return self.reject_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.sessions.add(id(session))
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [self.subject(m) for m in self.messages]

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @staticmethod
    def subject(msg: email.message.Message) -> str:
        return str(email.header.make_header(email.header.decode_header(msg["Subject"])))

    @staticmethod
    def text(msg: email.message.Message) -> str:
        for part in msg.walk():
            if part.get_content_type() == "text/plain":
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                return payload.decode(part.get_content_charset() or "utf-8")
        return ""


class WebhookServer:
    """Records JSON posts; answers `status` (e.g. 500 to fail) after `delay_s`."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.received: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.hits += 1
                outer.headers.append(dict(self.headers))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                if outer.status < 300:
                    try:
                        outer.received.append(json.loads(body))
                    except ValueError:
                        outer.received.append({"raw": body.decode(errors="replace")})
                    outer.received_at.append(time.monotonic())
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


class LineServer:
    """Stands in for the LINE Messaging API push endpoint (`POST /v2/bot/message/push`), as documented: Bearer
    token checked (401), at most 5 messages (400), text of at most 5,000 characters (400), and `X-Line-Retry-Key`
    honoured — a key accepted once answers 409 and delivers nothing again.

    `script`: answers for the first requests, in order — `(status, headers, accept)`; `accept=True` delivers the push
    and then answers `status` anyway (an answer lost on the way: the case the retry key exists for). Then 200.
    `echo_auth`: hostile error bodies that repeat the Authorization header."""

    def __init__(
        self, token: str, script: list[tuple[int, dict[str, str], bool]] | None = None, echo_auth: bool = False
    ) -> None:
        self.token = token
        self.script = list(script or [])
        self.echo_auth = echo_auth
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []  # every push: (lower-cased headers, body)
        self.delivered: list[tuple[str, str]] = []  # (to, text) of every message LINE would have delivered
        self.accepted_pushes: list[list[str]] = []  # texts of each accepted push
        self._accepted_keys: set[str] = set()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status, headers, text = outer._answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                raw = text.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        with self._lock:
            self.requests.append((headers, body))
            auth = headers.get("authorization", "")
            if path != "/v2/bot/message/push":
                return 404, {}, '{"message":"Not found"}'
            if auth != f"Bearer {self.token}":
                return 401, {}, json.dumps({"message": f"Authentication failed: {auth}"})
            messages = body.get("messages", [])
            if not 1 <= len(messages) <= 5 or any(len(m.get("text", "")) > 5000 for m in messages):
                return 400, {}, '{"message":"The request body has 1 error(s)"}'
            key = headers.get("x-line-retry-key", "")
            if key and key in self._accepted_keys:
                accepted = {"X-Line-Accepted-Request-Id": "req-" + key[:8]}
                return 409, accepted, '{"message":"The retry key is already accepted"}'
            status, extra, accept = self.script.pop(0) if self.script else (200, {}, True)
            if accept:
                self._accepted_keys.add(key)
                self.delivered += [(body["to"], m["text"]) for m in messages]
                self.accepted_pushes.append([m["text"] for m in messages])
            if status == 200:
                return 200, {}, json.dumps({"sentMessages": [{"id": str(i)} for i in range(len(messages))]})
            detail = f"error, request had {auth}" if self.echo_auth else "error"
            return status, extra, json.dumps({"message": detail})

    def __enter__(self) -> LineServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
