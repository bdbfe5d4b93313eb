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
