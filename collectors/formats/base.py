"""The payload-format seam: the transport hands bytes to a parser and never looks inside them.

Each format lives in its own folder (`collectors/formats/<name>/`) with a README, `parser.py`, tests and
sample payloads under `testdata/`, and is registered in `collectors/formats/__init__.py`.
"""

from __future__ import annotations

from typing import Protocol

from core.model import RawReading


class PayloadFormat(Protocol):
    """Turns one MQTT message into zero or more raw readings (lenient: vendor names, raw values).

    Raises `collectors.errors.RejectedMessage` (reason e.g. `bad_json`, `bad_topic`, `no_values`) when the
    message cannot be read at all; the pipeline quarantines it.
    """

    name: str

    def parse(self, topic: str, payload: bytes, received_ns: int) -> list[RawReading]: ...
