"""Signed one-click acknowledgement links for people who get alerts by LINE, e-mail or SMS (no API token).

    {public_url}/api/v1/alerts/{alert_id}/ack-link?r={receiver}&exp={unix seconds}&sig={hex}

`sig` is HMAC-SHA256 over (alert id, receiver, exp) with a server secret; checked with `hmac.compare_digest`.
A link names the receiver it was sent to (the acknowledgement is recorded as `link:{receiver}`) and expires
(`ttl_s`, 7 days by default). Opening it (GET) only shows the alert and a confirm button: mail scanners and
LINE's link preview fetch links, so only the POST of that button acknowledges (see `rules.api`).

The secret is `rules.ack_link_secret` when set, else 32 random bytes made once and kept in
`{data_dir}/ack-link.secret` (mode 0600), so links survive restarts. Neither the secret nor a signature is
ever logged; changing the secret invalidates every link already sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from core.time import NS
from rules.labels import FEED_TH, SEVERITY_TH, STATE_TH, TEMPLATES_DIR
from rules.store import Alert, AlertStore
from rules.timeutil import format_en, format_th

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 7 * 86400
SECRET_FILE_NAME = "ack-link.secret"
MIN_SECRET_BYTES = 32
_DOMAIN = "nakhon-ack-link-v1"  # a signature made for something else never verifies here
_SIG = re.compile(r"[0-9a-f]{64}")
_EXP = re.compile(r"[0-9]{1,12}")
MAX_RECEIVER_LEN = 115  # `link:{receiver}` fits the 120 characters of `ack_by`
MAX_ALERT_ID_LEN = 64


class AckLinkSecretError(RuntimeError):
    """The secret file is unreadable or malformed (the message names the file, never its content)."""


@dataclass(frozen=True, slots=True)
class AckLinkParams:
    alert_id: str
    receiver: str
    exp: int


class AckLinkSigner:
    """Makes and checks signed acknowledgement links."""

    def __init__(self, secret: bytes, ttl_s: float = DEFAULT_TTL_S) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the acknowledge-link secret must be at least {MIN_SECRET_BYTES} bytes")
        if ttl_s <= 0:
            raise ValueError("the acknowledge-link lifetime must be positive")
        self._key = secret
        self.ttl_s = ttl_s

    def __repr__(self) -> str:  # never show the key
        return f"AckLinkSigner(ttl_s={self.ttl_s})"

    def sign(self, alert_id: str, receiver: str, exp: int) -> str:
        # JSON keeps the fields apart whatever they contain ("a|b" + "c" cannot pass for "a" + "b|c").
        message = json.dumps([_DOMAIN, alert_id, receiver, int(exp)], ensure_ascii=False, separators=(",", ":"))
        return hmac.new(self._key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def expiry(self, now_ns: int) -> int:
        return now_ns // NS + int(self.ttl_s)

    def query(self, alert_id: str, receiver: str, now_ns: int) -> dict[str, str]:
        exp = self.expiry(now_ns)
        return {"r": receiver, "exp": str(exp), "sig": self.sign(alert_id, receiver, exp)}

    def path(self, alert_id: str) -> str:
        return f"/api/v1/alerts/{quote(alert_id, safe='')}/ack-link"

    def url(self, public_url: str, alert_id: str, receiver: str, now_ns: int) -> str:
        """`{public_url}/api/v1/alerts/{alert_id}/ack-link?r=&exp=&sig=`, valid `ttl_s` from `now_ns`."""
        query = urlencode(self.query(alert_id, receiver, now_ns))
        return f"{public_url.rstrip('/')}{self.path(alert_id)}?{query}"

    def verify(
        self, alert_id: str, receiver: str | None, exp: str | None, sig: str | None, now_ns: int
    ) -> AckLinkParams | None:
        """The link's parameters when the signature is right and the link has not expired, else None.

        Callers must not tell *why* a link failed: a tampered and an expired link look the same."""
        if not alert_id or not receiver or not exp or not sig:
            return None
        if len(alert_id) > MAX_ALERT_ID_LEN or len(receiver) > MAX_RECEIVER_LEN:
            return None
        if not _EXP.fullmatch(exp) or not _SIG.fullmatch(sig):
            return None
        expected = self.sign(alert_id, receiver, int(exp))
        if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii")):
            return None
        if now_ns // NS >= int(exp):
            return None
        return AckLinkParams(alert_id, receiver, int(exp))


def _mode_is_private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def _read_secret_file(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
        secret = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AckLinkSecretError(
            f"cannot read the acknowledge-link secret {path} ({type(exc).__name__}); "
            "delete it to make a new one (links already sent stop working)"
        ) from None
    if len(secret) < MIN_SECRET_BYTES:
        raise AckLinkSecretError(
            f"the acknowledge-link secret {path} is too short; "
            "delete it to make a new one (links already sent stop working)"
        )
    if os.name == "posix" and not _mode_is_private(path):
        log.warning("acknowledge-link secret %s is readable by other users: chmod 600 it", path)
    return secret


def load_or_create_secret(path: Path) -> bytes:
    """The secret kept in `path` (hex), made once (32 random bytes, mode 0600) when the file does not exist.

    Safe against two processes starting together: the file is written aside and hard-linked into place, so
    exactly one secret wins and both processes use it."""
    if path.exists():
        return _read_secret_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_bytes(MIN_SECRET_BYTES).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask
        try:
            os.link(tmp, path)
            log.info("made a new acknowledge-link secret in %s", path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError:  # a filesystem without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return _read_secret_file(path)


def resolve_secret(secret: str | bytes | None, secret_file: Path | None) -> bytes:
    """The configured secret (text, UTF-8), else the one in `secret_file`, else an in-memory one.

    Without either, links stop working at the next restart (fine for tests and throwaway embeddings only)."""
    if secret:
        key = secret.encode("utf-8") if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"rules.ack_link_secret must be at least {MIN_SECRET_BYTES} bytes long")
        return key
    if secret_file is not None:
        return load_or_create_secret(secret_file)
    log.warning("no acknowledge-link secret configured: links sent now stop working when this process restarts")
    return secrets.token_bytes(MIN_SECRET_BYTES)


def acknowledge_once(store: AlertStore, alert_id: str, by: str, comment: str, t_ns: int) -> tuple[Alert | None, bool]:
    """The first acknowledgement stands (see `AlertStore.ack_once`)."""
    return store.ack_once(alert_id, by, comment, t_ns)


# ---- the page behind the link (rules/templates/ack_page.html.j2) -------------------------------------------

PAGE_TEXT: dict[str, tuple[str, str, str, str]] = {
    # page: (heading_th, heading_en, text_th, text_en)
    "confirm": ("ยืนยันการรับทราบการแจ้งเตือน", "Acknowledge this alert", "", ""),
    "done": ("รับทราบแล้ว ขอบคุณ", "Acknowledged, thank you", "", ""),
    "already": ("การแจ้งเตือนนี้มีผู้รับทราบแล้ว", "This alert was already acknowledged", "", ""),
    "invalid": (
        "ลิงก์ไม่ถูกต้องหรือหมดอายุแล้ว",
        "This link is invalid or has expired",
        "ลิงก์รับทราบนี้ใช้ไม่ได้หรือหมดอายุแล้ว โปรดใช้ลิงก์ในข้อความแจ้งเตือนฉบับล่าสุด หรือติดต่อศูนย์ปฏิบัติการ",
        "Use the link in the latest alert message, or contact the operations centre.",
    ),
    "missing": (
        "ไม่พบการแจ้งเตือนนี้",
        "Alert not found",
        "การแจ้งเตือนนี้ไม่มีอยู่ในระบบแล้ว โปรดติดต่อศูนย์ปฏิบัติการ",
        "This alert no longer exists. Please contact the operations centre.",
    ),
    "bad": (
        "คำขอไม่ถูกต้อง",
        "Bad request",
        "โปรดเปิดลิงก์จากข้อความแจ้งเตือนอีกครั้ง",
        "Please open the link from the alert message again.",
    ),
}

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class AckPages:
    """Bilingual HTML (Thai first) for the link's GET and POST. Autoescaped: alert fields are never markup."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir or TEMPLATES_DIR)),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(th_time=format_th, en_time=format_en)
        self.env.globals.update(SEVERITY_TH=SEVERITY_TH, STATE_TH=STATE_TH, FEED_TH=FEED_TH)

    def render(
        self,
        page: str,
        alert: Alert | None = None,
        *,
        receiver: str = "",
        exp: int | str = "",
        sig: str = "",
    ) -> str:
        heading_th, heading_en, text_th, text_en = PAGE_TEXT[page]
        return self.env.get_template("ack_page.html.j2").render(
            page=page,
            alert=alert,
            receiver=receiver,
            exp=exp,
            sig=sig,
            heading_th=heading_th,
            heading_en=heading_en,
            text_th=text_th,
            text_en=text_en,
        )


__all__ = [
    "DEFAULT_TTL_S",
    "PAGE_HEADERS",
    "SECRET_FILE_NAME",
    "AckLinkParams",
    "AckLinkSecretError",
    "AckLinkSigner",
    "AckPages",
    "acknowledge_once",
    "load_or_create_secret",
    "resolve_secret",
]
