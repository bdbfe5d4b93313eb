"""`nakhon quarantine replay`: resubmit quarantined messages once their cause is fixed.

- A message refused before storage (unknown device, bad field, ...) goes through the collectors' pipeline
  again, exactly as if it had just arrived (its original receipt time is kept, so a reading without `ts` gets
  its original time): stored, or quarantined anew with today's reason.
- A point the store refused (`sink_rejected`, kept as its line-protocol line) is written to InfluxDB again.
- A message kept truncated (`too_large`, or a payload above the quarantine's 4 KiB) cannot be replayed whole
  and stays.

A row is deleted only once its outcome is durable (stored, or its new quarantine row written): a crash mid-way
replays it again (at-least-once, like ingest). Derived values (rolling means) start from a fresh state.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from collectors.directory import DeviceDirectory
from collectors.domain import default_enrichers
from collectors.errors import SinkError, SinkRejected
from collectors.mapping import FieldMapper
from collectors.mapping.profiles import builtin_profiles
from collectors.pipeline import Pipeline
from collectors.quarantine import QuarantinedMessage, QuarantineStore
from collectors.sinks.base import Sink
from collectors.sinks.writer import BatchWriter
from nakhon.collector_wiring import build_inputs
from nakhon.config import Settings

log = logging.getLogger(__name__)

SINK_TOPIC_PREFIX = "(sink) "


@dataclass
class ReplayReport:
    resubmitted: int = 0
    rewritten: int = 0
    still_refused: int = 0
    not_replayable: int = 0
    requarantined: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.resubmitted} messages resubmitted ({self.requarantined} quarantined again), "
            f"{self.rewritten} refused points written, {self.still_refused} still refused, "
            f"{self.not_replayable} kept (truncated, cannot be replayed)"
        )


async def replay(
    settings: Settings,
    store: QuarantineStore,
    directory: DeviceDirectory,
    sink: Sink,
    *,
    reason: str | None = None,
    since_ns: int | None = None,
    page: int = 1000,
) -> ReplayReport:
    report = ReplayReport()
    if not await sink.ping():
        report.errors.append(f"sink {sink.name} does not answer: nothing replayed")
        return report
    writer = BatchWriter(sink, None, max_batch_points=settings.influxdb.batch_points,
                         max_pending_points=max(page * 2, settings.influxdb.batch_points * 2))
    inputs, _ = build_inputs(settings)
    pipeline = Pipeline(inputs=inputs, directory=directory, writer=writer, quarantine=store, mapper=FieldMapper(),
                        profiles=dict(builtin_profiles()), enrichers=default_enrichers())
    last_id = store.newest_id()
    after = 0
    try:
        while True:
            rows = [r for r in store.list(reason=reason, since_ns=since_ns, after_id=after, limit=page)
                    if r.id is not None and r.id <= last_id]
            if not rows:
                break
            after = max(r.id or 0 for r in rows)
            done: list[int] = []
            await _replay_page(rows, pipeline, sink, writer, report, done)
            store.remove(done)
    finally:
        await store.flush()
        await writer.close()  # closes the sink too
    report.requarantined = max(0, store.newest_id() - last_id)
    return report


async def _replay_page(rows: list[QuarantinedMessage], pipeline: Pipeline, sink: Sink, writer: BatchWriter,
                       report: ReplayReport, done: list[int]) -> None:
    outcomes: list[tuple[int, asyncio.Future[None]]] = []
    lines: list[tuple[int, bytes]] = []
    for row in rows:
        assert row.id is not None
        if row.payload_size > len(row.payload):
            report.not_replayable += 1
        elif row.topic.startswith(SINK_TOPIC_PREFIX):
            lines.append((row.id, row.payload))
        else:
            outcomes.append((row.id, pipeline.submit(row.topic, row.payload, row.received_ns)))
    writer.flush()
    for row_id, outcome in outcomes:
        try:
            await outcome
        except Exception as exc:  # not durable: the row stays for the next replay
            report.errors.append(f"quarantine row {row_id}: {exc}")
            continue
        report.resubmitted += 1
        done.append(row_id)
    if lines:
        await _rewrite(lines, sink, report, done)


async def _rewrite(lines: list[tuple[int, bytes]], sink: Sink, report: ReplayReport, done: list[int]) -> None:
    write_lines = getattr(sink, "write_lines", None)
    if write_lines is None:
        report.errors.append(f"sink {sink.name} cannot replay line protocol: {len(lines)} refused points kept")
        return
    try:
        await write_lines([line for _, line in lines])
        report.rewritten += len(lines)
        done.extend(row_id for row_id, _ in lines)
        return
    except SinkRejected:
        pass  # some still refused: find which, one by one (bounded by the page)
    except SinkError as exc:
        report.errors.append(str(exc))
        return
    for row_id, line in lines:
        try:
            await write_lines([line])
        except SinkRejected:
            report.still_refused += 1
            continue
        except SinkError as exc:
            report.errors.append(str(exc))
            return
        report.rewritten += 1
        done.append(row_id)
