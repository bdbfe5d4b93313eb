"""An in-process notifier for unit tests: records messages, can fail or stall on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from rules.notify.base import NotifyError, NotifyMessage


class MemoryNotifier:
    def __init__(self, name: str = "memory", fail: Iterable[NotifyError] = (), delay_s: float = 0.0) -> None:
        self.name = name
        self.sent: list[NotifyMessage] = []
        self.attempts = 0
        self._fail = list(fail)
        self.delay_s = delay_s

    def fail_next(self, *errors: NotifyError) -> None:
        self._fail.extend(errors)

    async def send(self, message: NotifyMessage) -> None:
        self.attempts += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self._fail:
            raise self._fail.pop(0)
        self.sent.append(message)
