"""`RegistryDirectory`: the collectors' in-memory copy, fresh without a query per lookup."""

from __future__ import annotations

import time

from gateway.registry import RegistryDirectory, RegistryStore
from gateway.registry.schemas import DevicePatch
from tests.gateway.registry.specs import flood


def test_directory_finds_a_device_registered_by_another_process_soon_after_a_miss(store: RegistryStore) -> None:
    directory = RegistryDirectory(store, refresh_s=60)  # the periodic poll cannot explain what follows
    try:
        other = RegistryStore(store.url)  # another process's store on the same database
        other.devices.create(flood("elsewhere-1"), actor="t")
        other.close()
        assert directory.by_id("elsewhere-1") is None  # the miss asks the background thread to check now
        deadline = time.monotonic() + 5
        while directory.by_id("elsewhere-1") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert directory.by_id("elsewhere-1") is not None
    finally:
        directory.stop()


def test_directory_refreshes_on_change_without_queries_per_lookup(store: RegistryStore) -> None:
    directory = RegistryDirectory(store, refresh_s=0.2)
    try:
        assert directory.by_id("new-1") is None
        store.devices.create(flood("new-1"), actor="t")
        # in-process changes reload the copy before the call returns: no window in which the device is unknown
        assert directory.by_id("new-1") is not None

        # A change made by another process (another store on the same database) is found by the poll.
        other = RegistryStore(store.url)
        other.devices.update("new-1", DevicePatch(name="renamed"), actor="t")
        other.close()
        deadline = time.monotonic() + 5
        while directory.by_id("new-1").name != "renamed" and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.02)
        assert directory.by_id("new-1").name == "renamed"  # type: ignore[union-attr]

        queries = []

        def count(*_args: object) -> None:
            queries.append(1)

        from sqlalchemy import event

        event.listen(store.engine, "before_cursor_execute", count)
        try:
            for _ in range(10_000):
                directory.by_id("new-1")
                directory.by_dev_eui("0000000000000000")
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
        assert len(queries) <= 4  # at most a background poll or two, never one per lookup
    finally:
        directory.stop()
