"""Credentials: MQTT device passwords (stored as scrypt hashes), API tokens (stored as SHA-256) and redaction.

Device passwords are 128-bit random strings, so a fast hash would already be safe; scrypt costs little
here (it runs once per create/rotate) and keeps a leaked registry useless even for weak, hand-set passwords.
API tokens are 256-bit random, so SHA-256 is enough and lets a request be checked with one indexed lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
TOKEN_PREFIX = "nkh_"
REDACTED = "***redacted***"
SECRET_KEY_PARTS = ("password", "secret", "token", "hash")


def new_device_password() -> str:
    return secrets.token_urlsafe(18)  # 144 bits, no characters that shells or CSV would mangle


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt_b64), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def redact(value: Any) -> Any:
    """A copy of `value` with every secret-looking key's value replaced (for audit records and logs)."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(str(k)) and v is not None else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
