"""Staff accounts on SQLite and PostgreSQL: the password is only ever kept as a memory-hard hash, guessing locks
the account with a growing back-off, and disabling or resetting ends every session at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.errors import ConflictError, InvalidInputError
from gateway.registry.store import RegistryStore
from gateway.web.models import StaffSession, StaffUser
from gateway.web.users import LOCK_BASE_S, LOCK_MAX_S, MAX_FAILURES, UserStore

PASSWORD = "ข้าวเหนียว-mamuang-42"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def users(store: RegistryStore, clock: Clock) -> UserStore:
    return UserStore(store, clock=clock)


def test_password_is_kept_only_as_a_scrypt_hash(users: UserStore, store: RegistryStore) -> None:
    users.add_user("somchai", PASSWORD, "engineer", cities=["laem-chabang"], actor="test")
    with Session(store.engine) as session:
        stored = session.scalars(select(StaffUser.password_hash)).one()
    assert stored.startswith("scrypt$16384$8$") and PASSWORD not in stored
    audit = store.audit.find(entity_type="user").items
    assert [a.action for a in audit] == ["user.create"]
    assert PASSWORD not in str(audit[0].after)
    assert users.login("somchai", PASSWORD).principal is not None
    assert users.login("somchai", PASSWORD.upper()).principal is None


def test_short_password_bad_role_bad_name_and_duplicate_are_refused(users: UserStore) -> None:
    with pytest.raises(InvalidInputError):
        users.add_user("somchai", "short", "engineer", actor="test")
    with pytest.raises(InvalidInputError):
        users.add_user("somchai", PASSWORD, "superuser", actor="test")
    with pytest.raises(InvalidInputError):
        users.add_user("Som Chai", PASSWORD, "viewer", actor="test")
    users.add_user("somchai", PASSWORD, "viewer", actor="test")
    with pytest.raises(ConflictError):
        users.add_user("somchai", PASSWORD, "admin", actor="test")


def test_guessing_locks_the_account_even_against_the_right_password_and_backs_off(
    users: UserStore, clock: Clock
) -> None:
    users.add_user("malee", PASSWORD, "operator", actor="test")
    for _ in range(MAX_FAILURES - 1):
        assert users.login("malee", "guess-guess-guess").locked_for_s == 0
    assert users.login("malee", "guess-guess-guess").locked_for_s == LOCK_BASE_S
    locked = users.login("malee", PASSWORD)
    assert locked.principal is None and 0 < locked.locked_for_s <= LOCK_BASE_S
    clock.now += timedelta(seconds=LOCK_BASE_S + 1)
    assert users.login("malee", "guess-guess-guess").locked_for_s == 2 * LOCK_BASE_S  # doubles
    for _ in range(20):
        clock.now += timedelta(seconds=LOCK_MAX_S + 1)
        outcome = users.login("malee", "guess-guess-guess")
    assert outcome.locked_for_s == LOCK_MAX_S  # capped
    clock.now += timedelta(seconds=LOCK_MAX_S + 1)
    assert users.login("malee", PASSWORD).principal is not None
    assert users.login("malee", "guess-guess-guess").locked_for_s == 0  # success reset the count


def test_disable_and_reset_end_every_session_at_once(users: UserStore, store: RegistryStore) -> None:
    users.add_user("prasert", PASSWORD, "viewer", actor="test")
    cookie, _csrf = users.create_session("prasert")
    assert users.session(cookie) is not None
    users.disable("prasert", actor="admin")
    assert users.session(cookie) is None
    assert users.login("prasert", PASSWORD).principal is None
    users.reset_password("prasert", "a-new-long-password", actor="admin")
    assert users.login("prasert", PASSWORD).principal is None
    cookie, _csrf = users.create_session("prasert")
    users.reset_password("prasert", "another-long-password", actor="admin")
    assert users.session(cookie) is None
    with Session(store.engine) as session:
        assert session.scalars(select(StaffSession)).all() == []
    actions = [a.action for a in store.audit.find(entity_type="user").items]
    assert actions == ["user.reset_password", "user.reset_password", "user.disable", "user.create"]


def test_sessions_expire_and_only_their_hash_is_stored(users: UserStore, store: RegistryStore, clock: Clock) -> None:
    users.add_user("somchai", PASSWORD, "engineer", actor="test")
    cookie, _csrf = users.create_session("somchai")
    with Session(store.engine) as session:
        stored = session.scalars(select(StaffSession.id_hash)).one()
    assert cookie not in stored
    clock.now += timedelta(hours=13)
    assert users.session(cookie) is None
    assert users.session("") is None and users.session("x" * 10_000) is None
