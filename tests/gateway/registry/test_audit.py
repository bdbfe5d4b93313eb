"""The audit log: entries from elsewhere recorded, secrets redacted, filtered by time newest first."""

from __future__ import annotations

from datetime import timedelta

from gateway.registry import RegistryStore
from gateway.secrets import REDACTED


def test_recorded_entries_are_redacted_and_filtered_newest_first(store: RegistryStore) -> None:
    store.audit.record(actor="web:admin", action="user.create", entity_type="user", entity_id="somchai",
                       after={"username": "somchai", "password": "hunter2"})
    store.audit.record(actor="cli", action="broker.reconcile", entity_type="broker", entity_id="devices")
    page = store.audit.find()
    assert [e.action for e in page.items] == ["broker.reconcile", "user.create"] and page.total == 2
    user = store.audit.find(entity_type="user").items[0]
    assert user.after == {"username": "somchai", "password": REDACTED}
    at = user.at
    assert store.audit.find(since=at, until=at + timedelta(microseconds=1), entity_type="user").total == 1
    assert store.audit.find(until=at, entity_type="user").total == 0  # `until` is exclusive
    assert store.audit.find(actor="nobody").total == 0
