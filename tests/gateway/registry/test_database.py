"""The registry database: migrations on SQLite and PostgreSQL, transactions, change listeners."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from gateway.errors import ConflictError
from gateway.registry import RegistryStore
from tests.gateway.registry.specs import flood


def test_migrations_create_every_table_and_are_idempotent(store: RegistryStore) -> None:
    store.migrate()  # a second run is a no-op
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "devices",
        "device_profiles",
        "device_overrides",
        "api_tokens",
        "audit_log",
        "device_recent_messages",
        "alembic_version",
    } <= tables


def test_a_failed_change_writes_neither_the_change_nor_its_audit_entry(store: RegistryStore) -> None:
    store.devices.create(flood("a-1", dev_eui="00000000000000aa"), actor="t")
    with pytest.raises(ConflictError):
        store.devices.create(flood("a-2", dev_eui="00000000000000aa"), actor="t")
    assert not store.devices.exists("a-2")
    assert [e.entity_id for e in store.audit.find().items] == ["a-1"]


def test_listeners_hear_of_committed_changes_only_and_a_failing_one_undoes_nothing(store: RegistryStore) -> None:
    heard: list[str] = []

    def broken() -> None:
        raise RuntimeError("listener bug")

    store.db.add_change_listener(broken)
    store.db.add_change_listener(lambda: heard.append("changed"))
    store.devices.create(flood("a-1"), actor="t")  # the broken listener is logged, not raised
    assert heard == ["changed"] and store.devices.exists("a-1")
    with pytest.raises(ConflictError):
        store.devices.create(flood("a-1"), actor="t")
    assert heard == ["changed"]  # a refused change tells nobody
    store.db.remove_change_listener(broken)
