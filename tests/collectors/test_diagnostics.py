"""The diagnostics buffer's hand-over: what a failed flush must not lose, and what it must not grow."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import pytest

from collectors.diagnostics import DiagnosticsBuffer
from collectors.service import CollectorService
from core.model import RecentMessage


def _record(buffer: DiagnosticsBuffer, device_id: str, start: int, count: int, *, accepted: bool = True) -> None:
    for i in range(start, start + count):
        buffer.record(device_id, topic=f"t/{device_id}", payload=b"%d" % i, received_ns=i, accepted=accepted)


def _payloads(messages: Sequence[RecentMessage]) -> list[str]:
    return [str(m.payload) for m in messages]


def test_take_new_gives_only_what_arrived_since_the_last_take_capped_at_the_deque() -> None:
    buffer = DiagnosticsBuffer()
    _record(buffer, "d1", 0, 25)
    assert _payloads(buffer.take_new()["d1"]) == [str(i) for i in range(5, 25)]
    _record(buffer, "d1", 25, 3)
    assert _payloads(buffer.take_new()["d1"]) == ["25", "26", "27"]
    assert buffer.take_new() == {}


def test_a_failed_flush_put_back_is_written_by_the_next_one_with_what_arrived_meanwhile() -> None:
    buffer = DiagnosticsBuffer()
    _record(buffer, "d1", 0, 5)
    _record(buffer, "d2", 0, 2)
    failed = buffer.take_new()
    _record(buffer, "d1", 5, 3)  # arrives while the failed flush ran
    buffer.put_back(failed)
    again = buffer.take_new()
    assert _payloads(again["d1"]) == [str(i) for i in range(8)]
    assert _payloads(again["d2"]) == ["0", "1"]


def test_put_back_never_exceeds_the_newest_per_device_nor_revives_evicted_devices() -> None:
    buffer = DiagnosticsBuffer(max_devices=10)
    for round_ in range(50):  # a registry that keeps failing while messages keep coming
        for d in range(30):
            _record(buffer, f"d{d}", round_ * 40, 40)
        buffer.put_back(buffer.take_new())
    assert len(buffer._new) <= 10  # only the devices still kept
    assert all(count <= 20 for count in buffer._new.values())
    taken = buffer.take_new()
    assert set(taken) == {f"d{d}" for d in range(20, 30)}
    assert _payloads(taken["d29"]) == [str(i) for i in range(49 * 40 + 20, 50 * 40)]  # the newest 20


def test_unknown_ids_put_back_stay_within_their_small_bound() -> None:
    buffer = DiagnosticsBuffer(is_registered=lambda _: False, max_unknown=100, per_unknown=3)
    for round_ in range(20):
        for d in range(1000):
            _record(buffer, f"junk-{round_}-{d}", 0, 5, accepted=False)
        buffer.put_back(buffer.take_new())
    assert len(buffer._new) <= 100 and all(c <= 3 for c in buffer._new.values())


def test_the_service_puts_back_what_a_failing_registry_did_not_store() -> None:
    buffer = DiagnosticsBuffer()
    stored: list[Mapping[str, Sequence[RecentMessage]]] = []
    healthy = False

    def flush(batch: Mapping[str, Sequence[RecentMessage]]) -> None:
        if not healthy:
            raise RuntimeError("registry down")
        stored.append(batch)

    service = SimpleNamespace(diagnostics=buffer, _diagnostics_flush=flush)
    _record(buffer, "d1", 0, 4)
    with pytest.raises(RuntimeError):
        asyncio.run(CollectorService.flush_diagnostics(service))  # type: ignore[arg-type]
    _record(buffer, "d1", 4, 1)
    healthy = True
    asyncio.run(CollectorService.flush_diagnostics(service))  # type: ignore[arg-type]
    assert [_payloads(b["d1"]) for b in stored] == [["0", "1", "2", "3", "4"]]
