"""Fixtures of the sink tests: one real influxd per session (tests use their own measurements), helpers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import InfluxServer

_names = itertools.count()


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    with InfluxServer(tmp_path_factory.mktemp("influx")) as server:
        yield server


@pytest.fixture
def measurement() -> str:
    """A measurement name no other test uses (the session's influxd is shared)."""
    return f"m{next(_names)}"


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"
