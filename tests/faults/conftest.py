"""The brokers of the fault tests keep their persistence where Mosquitto can write it.

Started as root, Mosquitto drops to the `mosquitto` user, which cannot enter pytest's private tmp_path: its
`persistence true` would silently save nothing, and a broker restart would then look like a lost session.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def broker_workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="nakhon-faults-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
