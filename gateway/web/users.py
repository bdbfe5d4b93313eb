"""Staff accounts: passwords (scrypt, memory-hard), lockout with back-off, sessions, and who may see what.

A session cookie holds 256 random bits; the database keeps only their SHA-256 (a leaked table opens no
browser). Each session has its own CSRF token, sent back by every form and `fetch` that changes something.
After `MAX_FAILURES` wrong passwords in a row an account is locked for `LOCK_BASE_S`, doubling with every
further failure up to `LOCK_MAX_S`; while locked even the right password is refused (and not checked).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from core.db import utcnow
from gateway.errors import ConflictError, FieldProblem, GatewayError, InvalidInputError
from gateway.registry.schemas import ROLES
from gateway.registry.store import RegistryStore
from gateway.secrets import hash_password, verify_password
from gateway.web.models import StaffSession, StaffUser

MAX_FAILURES = 5
LOCK_BASE_S = 30.0
LOCK_MAX_S = 900.0
SESSION_TTL = timedelta(hours=12)
MIN_PASSWORD_CHARS = 10
LANGS = ("th", "en")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
CITY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# verified against when the user does not exist, so that a wrong name costs as much time as a wrong password
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class UserNotFoundError(GatewayError):
    code = "user_not_found"
    status_code = 404
    message_th = "ไม่พบผู้ใช้นี้"


@dataclass(frozen=True, slots=True)
class StaffPrincipal:
    """A logged-in person: role as for API tokens, `cities` empty means every city."""

    name: str
    role: str
    cities: tuple[str, ...]
    lang: str = "th"

    @property
    def actor(self) -> str:
        return f"user:{self.name}"

    def has_role(self, *roles: str) -> bool:
        return self.role == "admin" or self.role in roles

    def sees(self, city: str) -> bool:
        return not self.cities or city in self.cities


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    principal: StaffPrincipal | None
    locked_for_s: float = 0.0  # > 0: refused because the account is locked, for this much longer


@dataclass(frozen=True, slots=True)
class UserOut:
    username: str
    role: str
    cities: tuple[str, ...]
    lang: str
    disabled: bool
    locked_until: datetime | None
    created_at: datetime


def _principal(user: StaffUser) -> StaffPrincipal:
    return StaffPrincipal(user.username, user.role, tuple(user.cities or ()), user.lang)


def _out(user: StaffUser) -> UserOut:
    return UserOut(
        user.username, user.role, tuple(user.cities or ()), user.lang, user.disabled_at is not None,
        user.locked_until, user.created_at,
    )


def _session_hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInputError([FieldProblem("password", f"use at least {MIN_PASSWORD_CHARS} characters")])


def lock_seconds(failures: int) -> float:
    """How long the account stays locked after `failures` wrong passwords in a row (0 below the limit)."""
    if failures < MAX_FAILURES:
        return 0.0
    return min(LOCK_BASE_S * 2 ** (failures - MAX_FAILURES), LOCK_MAX_S)


class UserStore:
    """Staff users and sessions in the registry database; changes to accounts go to the registry's audit log."""

    def __init__(self, registry: RegistryStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.registry = registry
        self._sessions = sessionmaker(registry.engine, expire_on_commit=False)
        self._now = clock

    # ------------------------------------------------------------------ accounts

    def add_user(
        self, username: str, password: str, role: str, *, cities: Iterable[str] = (), lang: str = "th", actor: str
    ) -> UserOut:
        problems = []
        if not USERNAME.match(username):
            problems.append(FieldProblem("username", "lower-case letters, digits, '.', '_' or '-', 2-64 characters"))
        if role not in ROLES:
            problems.append(FieldProblem("role", f"must be one of {', '.join(ROLES)}", value=role))
        city_list = sorted({c.strip() for c in cities if c.strip()})
        problems += [FieldProblem("cities", "not a city id", value=c) for c in city_list if not CITY.match(c)]
        if lang not in LANGS:
            problems.append(FieldProblem("lang", "th or en", value=lang))
        if problems:
            raise InvalidInputError(problems)
        check_password_rules(password)
        now = self._now()
        user = StaffUser(
            username=username, password_hash=hash_password(password), role=role, cities=city_list, lang=lang,
            failed_logins=0, created_at=now, password_changed_at=now,
        )
        try:
            with self._sessions() as session, session.begin():
                if session.get(StaffUser, username) is not None:
                    raise ConflictError(f"a user named {username!r} already exists", message_th="มีผู้ใช้ชื่อนี้แล้ว")
                session.add(user)
        except IntegrityError as exc:
            raise ConflictError(f"a user named {username!r} already exists", message_th="มีผู้ใช้ชื่อนี้แล้ว") from exc
        self.registry.audit.record(
            actor=actor, action="user.create", entity_type="user", entity_id=username,
            after={"username": username, "role": role, "cities": city_list, "lang": lang},
        )
        return _out(user)

    def list_users(self) -> list[UserOut]:
        with self._sessions() as session:
            return [_out(u) for u in session.scalars(select(StaffUser).order_by(StaffUser.username))]

    def _change(self, username: str, action: str, actor: str, change: Callable[[StaffUser], Any]) -> UserOut:
        with self._sessions() as session, session.begin():
            user = session.get(StaffUser, username)
            if user is None:
                raise UserNotFoundError(f"no user named {username!r}")
            change(user)
            # every change to an account ends its sessions: a disabled or re-keyed person is logged out now
            session.execute(delete(StaffSession).where(StaffSession.username == username))
            out = _out(user)
        self.registry.audit.record(actor=actor, action=action, entity_type="user", entity_id=username)
        return out

    def disable(self, username: str, *, actor: str) -> UserOut:
        now = self._now()

        def apply(user: StaffUser) -> None:
            user.disabled_at = user.disabled_at or now

        return self._change(username, "user.disable", actor, apply)

    def reset_password(self, username: str, password: str, *, actor: str) -> UserOut:
        check_password_rules(password)
        password_hash = hash_password(password)
        now = self._now()

        def apply(user: StaffUser) -> None:
            user.password_hash = password_hash
            user.password_changed_at = now
            user.failed_logins = 0
            user.locked_until = None
            user.disabled_at = None  # a reset is also how an administrator lets a disabled person back in

        return self._change(username, "user.reset_password", actor, apply)

    def set_lang(self, username: str, lang: str) -> None:
        if lang not in LANGS:
            return
        with self._sessions() as session, session.begin():
            user = session.get(StaffUser, username)
            if user is not None:
                user.lang = lang

    # ------------------------------------------------------------------ login and sessions

    def login(self, username: str, password: str) -> LoginOutcome:
        now = self._now()
        with self._sessions() as session, session.begin():
            user = session.get(StaffUser, username, with_for_update=True)
            if user is None or user.disabled_at is not None:
                verify_password(password, _DUMMY_HASH)
                return LoginOutcome(None)
            if user.locked_until is not None and user.locked_until > now:
                return LoginOutcome(None, (user.locked_until - now).total_seconds())
            if not verify_password(password, user.password_hash):
                user.failed_logins += 1
                wait = lock_seconds(user.failed_logins)
                user.locked_until = now + timedelta(seconds=wait) if wait else None
                return LoginOutcome(None, wait)
            user.failed_logins = 0
            user.locked_until = None
            return LoginOutcome(_principal(user))

    def create_session(self, username: str) -> tuple[str, str]:
        """(cookie value, CSRF token) of a new session."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self._now()
        with self._sessions() as session, session.begin():
            session.execute(delete(StaffSession).where(StaffSession.expires_at <= now))
            session.add(
                StaffSession(id_hash=_session_hash(cookie), username=username, csrf=csrf, created_at=now,
                             expires_at=now + SESSION_TTL)
            )
        return cookie, csrf

    def session(self, cookie: str) -> tuple[StaffPrincipal, str] | None:
        """The person and CSRF token of a live session, or None (unknown, expired, or the user disabled)."""
        if not cookie or len(cookie) > 200:
            return None
        with self._sessions() as session:
            row = session.get(StaffSession, _session_hash(cookie))
            if row is None or row.expires_at <= self._now():
                return None
            user = session.get(StaffUser, row.username)
            if user is None or user.disabled_at is not None:
                return None
            return _principal(user), row.csrf

    def end_session(self, cookie: str) -> None:
        with self._sessions() as session, session.begin():
            session.execute(delete(StaffSession).where(StaffSession.id_hash == _session_hash(cookie)))


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


__all__ = [
    "LANGS", "LoginOutcome", "StaffPrincipal", "UserNotFoundError", "UserOut", "UserStore", "csrf_matches",
    "lock_seconds",
]
