"""Recent raw messages per device and the diagnostics built on them."""

from __future__ import annotations

import time
from datetime import timedelta

from gateway.registry import RecentMessage, RegistryStore
from tests.gateway.registry.specs import flood


def test_recent_messages_keep_the_last_20(store: RegistryStore) -> None:
    store.devices.create(flood(), actor="t")
    base = time.time_ns()
    first = {
        "cm-flood-1": [
            RecentMessage("city/chiangmai/flood/cm-flood-1", b'{"level_m": %d}' % i, True, None, base + i)
            for i in range(15)
        ]
    }
    store.recent.record(first)
    second = {
        "cm-flood-1": [
            RecentMessage("city/chiangmai/flood/cm-flood-1", b"x" * 5000, False, "schema: level_m", base + 100 + i)
            for i in range(10)
        ],
        "unknown-dev": [RecentMessage("city/x/air/unknown-dev", "{}", False, "unknown_device", base)],
    }
    store.recent.record(second)
    kept = store.recent.of("cm-flood-1")
    assert len(kept) == 20
    assert kept[0].received_at.utcoffset() == timedelta(0)
    assert len(kept[0].payload.encode()) == 2048 and not kept[0].accepted and kept[0].reason == "schema: level_m"
    diagnostics = store.recent.diagnostics("cm-flood-1")
    assert diagnostics.last_reading == {"level_m": 14}
    assert diagnostics.last_seen == kept[0].received_at
    assert len(store.recent.of("unknown-dev")) == 1


def test_the_trim_keeps_the_newest_20_by_receive_time_not_by_insertion(store: RegistryStore) -> None:
    base = time.time_ns()
    topic = "city/x/air/d1"
    store.recent.record({"d1": [RecentMessage(topic, f"new-{i}", True, None, base + i * 1000) for i in range(20)]})
    # a later flush of older messages (the collector's clock stepped back): all of them fall out of the newest 20
    store.recent.record({"d1": [RecentMessage(topic, f"old-{i}", True, None, base - 10**9 + i) for i in range(5)]})
    assert [m.payload for m in store.recent.of("d1", limit=100)] == [f"new-{i}" for i in reversed(range(20))]
    # same receive time: the later insert is the newer one
    store.recent.record({"d1": [RecentMessage(topic, "tie", True, None, base + 19 * 1000)]})
    kept = [m.payload for m in store.recent.of("d1", limit=100)]
    assert kept[:2] == ["tie", "new-19"] and len(kept) == 20 and "new-0" not in kept


def test_one_flush_of_many_devices_trims_every_device_and_no_other(store: RegistryStore) -> None:
    base = time.time_ns()
    store.recent.record({"quiet": [RecentMessage("t", "q", True, None, base)]})
    for round_ in range(3):
        store.recent.record(
            {f"d{d}": [RecentMessage("t", f"{round_}-{i}", True, None, base + round_ * 100 + i) for i in range(15)]
             for d in range(1200)}
        )
    for d in (0, 499, 500, 1199):
        assert [m.payload for m in store.recent.of(f"d{d}", limit=100)] == (
            [f"2-{i}" for i in reversed(range(15))] + [f"1-{i}" for i in reversed(range(10, 15))]
        )
    assert [m.payload for m in store.recent.of("quiet")] == ["q"]


def test_rows_are_stored_as_the_orm_stores_them(sqlite_store: RegistryStore) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from gateway.registry.models import DeviceRecentMessage

    at = datetime(2026, 12, 2, 7, 5, 9, 120034, tzinfo=UTC)
    ns = int(at.timestamp()) * 10**9 + at.microsecond * 1000 + 400  # sub-microsecond part rounds off
    sqlite_store.recent.record({"fast": [RecentMessage("t", "{}", True, "r", ns)]})
    with sqlite_store.db.transaction() as session:
        session.add(DeviceRecentMessage(device_id="orm", received_at=at, topic="t", payload="{}", accepted=True,
                                        reason="r"))
    with sqlite_store.db.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT device_id, received_at, typeof(received_at), accepted, typeof(accepted), reason "
            "FROM device_recent_messages ORDER BY device_id"
        )).all()
    assert rows[0][1:] == rows[1][1:] and rows[0][1] == "2026-12-02 07:05:09.120034"
    assert sqlite_store.recent.of("fast")[0].received_at == at
