"""Helpers for the MQTT fault tests: a recording handler, an account-checking broker, waiting."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.localservers import require_binary
from gateway.broker.setup import hand_to_broker_user
from tests.servers import MosquittoServer


class Recorder:
    """A transport handler that counts every delivery per payload and resolves (acknowledges) at once,
    unless `hold_outcomes` is set: then outcomes stay pending until `settle()`."""

    def __init__(self) -> None:
        self.deliveries: Counter[bytes] = Counter()
        self.hold_outcomes = False
        self._pending: list[asyncio.Future[None]] = []

    def handler(self, topic: str, payload: bytes, received_ns: int) -> asyncio.Future[None]:
        self.deliveries[payload] += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.hold_outcomes:
            self._pending.append(future)
        else:
            future.set_result(None)
        return future

    def settle(self) -> None:
        for future in self._pending:
            if not future.done():
                future.set_result(None)
        self._pending.clear()

    @property
    def duplicates(self) -> dict[bytes, int]:
        return {payload: count for payload, count in self.deliveries.items() if count > 1}


def durable_broker(workdir: Path, **options: object) -> MosquittoServer:
    """A Mosquitto whose persistence really is written (`workdir` from the `broker_workdir` fixture)."""
    broker = MosquittoServer(workdir, **options)  # type: ignore[arg-type]
    hand_to_broker_user(broker.dir)
    return broker


def password_broker(workdir: Path, accounts: dict[str, str]) -> MosquittoServer:
    """A Mosquitto that accepts only `accounts` (username → password); `set_accounts` changes them for the next
    start (same port and persistence, like an operator fixing the broker's configuration)."""
    broker = durable_broker(workdir, allow_anonymous=False)
    set_accounts(broker, accounts)
    return broker


def set_accounts(broker: MosquittoServer, accounts: dict[str, str]) -> None:
    path = broker.dir / "passwords"
    path.write_text("")
    for username, password in accounts.items():
        subprocess.run([require_binary("mosquitto_passwd"), "-b", str(path), username, password], check=True,
                       capture_output=True)
    path.chmod(0o640)
    hand_to_broker_user(path, broker.dir)
    broker.extra_conf = f"password_file {path}\nlog_type notice\nlog_type information"


async def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


def messages(prefix: str, count: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"t/{i % 5}", f"{prefix}-{i}".encode()) for i in range(start, start + count)]
