"""What a rule's `summary_th` / `summary_en` can show: the evidence of the alert, as a duty officer needs it.

    value, threshold     the condition's number and the threshold it was compared with, at this moment
    fields, tags         the latest reading of the device (what it reports now)
    opened, latest       the reading that opened the alert and the latest one: {fields, tags, time}
    device               {id, device_id, name, city, city_name, district, site, profile}
    rule, severity, for  the rule's name, severity and `for:` (seconds; `{{ for | duration }}`)
    silent_for, heartbeat  absence (heartbeat) rules only: seconds

When a `for:` runs out on the engine's tick (no reading at that moment), the message is made from the latest
reading, so the counts and values in it are the ones the device last reported — never empty.
`rules check` parses every template against `SUMMARY_NAMES` / `OBJECT_ATTRS` (rules/check.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.model import DeviceInfo, Reading

CityNames = Callable[[str], "tuple[str, str] | None"]
"""City slug -> (Thai name, English name), e.g. the registry's; None when unknown (the slug is shown)."""

SUMMARY_NAMES = frozenset(
    {"rule", "severity", "value", "threshold", "device", "fields", "tags", "opened", "latest", "for"}
)
ABSENCE_NAMES = frozenset({"silent_for", "heartbeat"})
OBJECT_ATTRS: dict[str, frozenset[str]] = {
    "device": frozenset({"id", "device_id", "name", "city", "city_name", "district", "site", "profile"}),
    "opened": frozenset({"fields", "tags", "time"}),
    "latest": frozenset({"fields", "tags", "time"}),
}


def reading_view(reading: Reading | None) -> dict[str, Any]:
    if reading is None:
        return {"fields": {}, "tags": {}, "time": None}
    return {"fields": dict(reading.fields), "tags": dict(reading.tags), "time": reading.time_ns}


def city_name(slug: str, names: CityNames | None, language: str) -> str:
    got = names(slug) if names is not None and slug else None
    if not got:
        return slug
    th, en = got
    return (th if language == "th" else en) or slug


def summary_context(
    *,
    rule: str,
    severity: str,
    for_s: float,
    device: DeviceInfo,
    opened: Reading | None,
    latest: Reading | None,
    value: float | None,
    threshold: float | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The context of one alert's summaries (language-neutral; the renderer adds the city's name per language)."""
    now = latest or opened
    ctx: dict[str, Any] = {
        "rule": rule,
        "severity": severity,
        "value": value,
        "threshold": threshold,
        "device": {
            "id": device.device_id,
            "device_id": device.device_id,
            "name": device.name or device.device_id,
            "city": device.city,
            "city_name": device.city,
            "district": device.district,
            "site": dict(device.site),
            "profile": device.profile or "",
        },
        "fields": dict(now.fields) if now else {},
        "tags": dict(now.tags) if now else {},
        "opened": reading_view(opened),
        "latest": reading_view(now),
        "for": for_s,
    }
    ctx.update(extra or {})
    return ctx
