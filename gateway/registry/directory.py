"""`RegistryDirectory`: the collectors' view of the registry, held fully in memory.

Lookups are two dict reads. A change made through the same store (the gateway API or CLI in this process)
reloads the copy before that call returns, so a device registered here is known to the collectors before its
credentials are even handed out. Changes made by another process (a separate gateway) are picked up by a
background thread that checks a cheap fingerprint every `refresh_s` seconds, and sooner — at most once a
second — when a lookup misses. There is never a database query per message.
"""

from __future__ import annotations

import logging
import threading
import time

from core.model import DeviceInfo
from gateway.registry.store import RegistryStore

log = logging.getLogger(__name__)


class RegistryDirectory:
    def __init__(self, store: RegistryStore, refresh_s: float = 5.0, *, start: bool = True) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._by_id: dict[str, DeviceInfo] = {}
        self._by_eui: dict[str, DeviceInfo] = {}
        self._marker: tuple[object, ...] | None = None
        self._wake = threading.Event()  # check the fingerprint now (a lookup missed, or stopping)
        self._stopping = threading.Event()
        self._reload_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.loaded_at: float | None = None
        self._last_miss_wake = 0.0
        self.refresh()
        store.db.add_change_listener(self.invalidate)
        if start:
            self.start()

    # -- the DeviceDirectory protocol (hot path: no I/O)

    def by_id(self, device_id: str) -> DeviceInfo | None:
        info = self._by_id.get(device_id)
        if info is None:
            self._missed()
        return info

    def by_dev_eui(self, dev_eui: str) -> DeviceInfo | None:
        info = self._by_eui.get(dev_eui.lower())
        if info is None:
            self._missed()
        return info

    def _missed(self) -> None:
        # A device registered by another process moments ago: check sooner than refresh_s, but rate-limited so
        # a stream of unknown devices costs one fingerprint query a second, not one per message.
        now = time.monotonic()
        if now - self._last_miss_wake >= 1.0:
            self._last_miss_wake = now
            self._wake.set()

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[DeviceInfo]:
        """Every registered device (any status), from memory: e.g. the rules engine's heartbeat checks."""
        return list(self._by_id.values())

    # -- keeping it fresh

    def refresh(self, *, force: bool = True) -> bool:
        """Reload from the store (if `force` or the fingerprint changed). Returns whether it reloaded."""
        with self._reload_lock:
            marker = self.store.view.change_marker()
            if not force and marker == self._marker:
                return False
            infos = self.store.view.device_infos()
            by_id = {info.device_id: info for info in infos}
            by_eui = {info.dev_eui.lower(): info for info in infos if info.dev_eui}
            # Swap whole dicts: readers on other threads see the old or the new map, never a half-built one.
            self._by_id, self._by_eui, self._marker = by_id, by_eui, marker
            self.loaded_at = time.monotonic()
            return True

    def invalidate(self) -> None:
        """Something changed through our store: reload now, in the caller's thread, before it returns."""
        self.refresh()

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="registry-directory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.store.db.remove_change_listener(self.invalidate)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.refresh_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.refresh(force=False)
            except Exception:  # the database may be restarting: keep serving the last good copy
                log.exception("registry directory refresh failed; serving the previous copy")
