"""SQLiteSink's read API (used by the demo) and its durability across reopen."""

from __future__ import annotations

from pathlib import Path

from collectors.sinks.sqlite import SQLiteSink

from .helpers import pt


async def test_read_api(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "n.db")
    await sink.write([pt(i, device=f"air-{i % 2}") for i in range(10)])
    assert sink.count("air_quality") == 10
    assert sink.count("air_quality", device_id="air-1") == 5
    assert sink.count("other") == 0
    latest = sink.latest("air_quality", device_id="air-0", limit=2)
    assert [p.time_ns for p in latest] == [pt(8).time_ns, pt(6).time_ns]
    window = sink.query("air_quality", since_ns=pt(2).time_ns, until_ns=pt(6).time_ns, tags={"device_id": "air-1"})
    assert [p.time_ns for p in window] == [pt(3).time_ns, pt(5).time_ns]
    assert sink.query("air_quality", tags={"district": "เขต บางรัก", "feed": "air"}) == [
        pt(i, device=f"air-{i % 2}") for i in range(10)
    ]
    await sink.close()


async def test_durable_across_reopen_and_field_types_remembered(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "n.db")
    await sink.write([pt(0, level=1.0)])
    await sink.close()
    assert await sink.ping() is False
    again = SQLiteSink(tmp_path / "n.db")
    assert again.count("air_quality") == 1
    mode = again._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    try:
        await again.write([pt(1, level="high")])
    except Exception as exc:
        assert "conflict" in str(exc)
    else:
        raise AssertionError("a field type conflict across reopen must be refused")
    await again.close()
