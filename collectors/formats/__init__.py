"""Payload formats, registered in one place (as Telegraf's parsers are).

    fmt = make_format("native", prefix="city")
    readings = fmt.parse(topic, payload, received_ns)

Device payloads are read leniently; our own configuration (format name and options) is checked strictly:
an unknown format or option raises `FormatConfigError` naming it and what is known.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from collectors.formats.base import PayloadFormat
from collectors.formats.chirpstack.parser import ChirpStackFormat
from collectors.formats.lpp.parser import LppError, LppFormat, decode_lpp
from collectors.formats.native.parser import NativeFormat
from collectors.formats.senml.parser import SenMLFormat
from collectors.formats.traccar.parser import TraccarFormat
from collectors.formats.ttn.parser import TTNFormat

FORMATS: dict[str, Callable[..., PayloadFormat]] = {
    "native": NativeFormat,
    "ttn": TTNFormat,
    "chirpstack": ChirpStackFormat,
    "senml": SenMLFormat,
    "lpp": LppFormat,
    "traccar": TraccarFormat,
}


class FormatConfigError(ValueError):
    """A format name or option in our own configuration is wrong."""


def make_format(name: str, **options: object) -> PayloadFormat:
    """Build the parser registered under `name` with its options (unknown names/options are errors)."""
    factory = FORMATS.get(name)
    if factory is None:
        raise FormatConfigError(f"unknown payload format {name!r}; known formats: {', '.join(sorted(FORMATS))}")
    accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise FormatConfigError(
            f"payload format {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(accepted) or '(none)'}"
        )
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise FormatConfigError(f"payload format {name!r}: {exc}") from None


__all__ = [
    "FORMATS",
    "ChirpStackFormat",
    "FormatConfigError",
    "LppError",
    "LppFormat",
    "NativeFormat",
    "PayloadFormat",
    "SenMLFormat",
    "TTNFormat",
    "TraccarFormat",
    "decode_lpp",
    "make_format",
]
