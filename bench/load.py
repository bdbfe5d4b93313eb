"""A background load for the benchmarks: a publisher running in a daemon thread until `stop()`."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

StatsT = TypeVar("StatsT")


class ThreadedLoad(ABC, Generic[StatsT]):
    """`publish(stop)` in a thread from `start()` until `stop()`, which returns what it returned or raises what
    stopped it (a load that fails silently would make the benchmark measure an idle system)."""

    def __init__(self, thread_name: str, label: str) -> None:
        self.label = label
        self.stats: StatsT | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    @abstractmethod
    def publish(self, stop: threading.Event) -> StatsT:
        """Publish until `stop` is set; return the publisher's statistics."""

    def _run(self) -> None:
        try:
            self.stats = self.publish(self._stop)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> StatsT:
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise RuntimeError(f"{self.label} failed: {self.error!r}") from self.error
        if self.stats is None:
            raise RuntimeError(f"{self.label} did not finish")
        return self.stats


__all__ = ["ThreadedLoad"]
