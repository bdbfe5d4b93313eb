"""What the console computes for people to read: health colours, battery, Bangkok times in two calendars, and
no page that names a word missing from either language."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.registry.models import DeviceRecentMessage
from gateway.web.i18n import TEXT, Words
from gateway.web.views import DEFAULT_HEARTBEAT_S, _battery, health_of

NOW = datetime(2026, 12, 1, 17, 30, tzinfo=UTC)
TEMPLATES = Path(__file__).resolve().parents[3] / "gateway" / "web" / "templates"


def message(age_s: float, accepted: bool = True) -> DeviceRecentMessage:
    return DeviceRecentMessage(device_id="d", received_at=NOW - timedelta(seconds=age_s), topic="t", payload="{}",
                               accepted=accepted)


@pytest.mark.parametrize(
    ("status", "maintenance", "heartbeat", "messages", "expected"),
    [
        ("active", None, 600, [message(60)], "reporting"),
        ("active", None, 600, [message(600 * 2)], "late"),
        ("active", None, 600, [message(600 * 4)], "silent"),
        ("active", None, None, [message(DEFAULT_HEARTBEAT_S * 2)], "late"),
        ("active", None, 600, [], "silent"),
        ("active", None, 600, [message(5, accepted=False), message(60)], "quarantining"),
        ("active", NOW + timedelta(hours=1), 600, [message(600 * 4)], "maintenance"),
        ("active", NOW - timedelta(hours=1), 600, [message(600 * 4)], "silent"),  # the window has ended
        ("retired", NOW + timedelta(hours=1), 600, [message(60)], "retired"),
    ],
)
def test_health_colour(status: str, maintenance: datetime | None, heartbeat: int | None,
                       messages: list[DeviceRecentMessage], expected: str) -> None:
    assert health_of(status, maintenance, heartbeat, messages, NOW) == expected


def test_battery_from_device_payloads_never_from_nonsense() -> None:
    assert _battery('{"level_m": 2.3, "battery_pct": 87}') == 87.0
    assert _battery('{"decoded_payload": {"batt": 55}}') == 55.0
    for hostile in ('{"battery_pct": 250}', '{"battery_pct": true}', '{"battery": "full"}', "not json", "[1, 2]"):
        assert _battery(hostile) is None, hostile


def test_times_are_bangkok_with_the_buddhist_era_in_thai() -> None:
    late_evening_utc = datetime(2026, 12, 31, 17, 5, 9, tzinfo=UTC)  # already 1 January 2027 in Bangkok
    assert Words("th").time(late_evening_utc) == "1 ม.ค. 2570 00:05:09 น."
    assert Words("en").time(late_evening_utc) == "2027-01-01 00:05:09"
    assert Words("en").time(int(late_evening_utc.timestamp()) * 1_000_000_000) == "2027-01-01 00:05:09"
    assert Words("th").time(None) == "ยังไม่เคย"


def test_every_word_a_template_uses_exists_in_both_languages() -> None:
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z0-9_]+)["']\s*[,)]""", template.read_text()))
    assert used, "no words found: the pattern no longer matches the templates"
    used |= {f"health_{h}" for h in ("reporting", "late", "silent", "maintenance", "quarantining", "retired")}
    used |= {"status_active", "status_retired"}  # built as "health_" + ..., "status_" + ...
    assert sorted(used - set(TEXT)) == []
    for key, (english, thai) in TEXT.items():
        assert english.strip() and thai.strip(), key
        assert re.search("[\u0e00-\u0e7f]", thai) or key == "lang_switch", f"{key}: the Thai text has no Thai"


def test_alerts_are_grouped_as_the_configured_routing_groups_them() -> None:
    from gateway.web.views import routing_group_of
    from rules.notify.routing import Router, parse_routing
    from rules.store import Alert

    router = Router(parse_routing(
        "receivers: [{name: duty, urls: []}]\n"
        "route:\n  receiver: duty\n  group_by: [city]\n"
        "  routes:\n    - match: {feed: bus}\n      receiver: duty\n      group_by: [rule, device_id]\n"
    ))
    group_of = routing_group_of(router)

    def alert(rule: str, device_id: str, city: str, feed: str) -> Alert:
        return Alert(id=device_id + rule, rule=rule, device_id=device_id, city=city, district="d", feed=feed,
                     severity="warning", state="firing", value=None, threshold=None, message_th="", message_en="",
                     labels={}, started_ns=1, fired_ns=1, resolved_ns=None, updated_ns=1)

    flood, air = alert("flood_level_high", "f1", "lc", "flood"), alert("air_pm25_high", "a1", "lc", "air")
    other_city = alert("air_pm25_high", "a2", "cm", "air")
    bus1, bus2 = alert("bus_speeding", "b1", "lc", "bus"), alert("bus_speeding", "b2", "lc", "bus")
    assert group_of(flood) == group_of(air) != group_of(other_city)  # one message per city
    assert group_of(flood)[1] == "lc"
    assert group_of(bus1) != group_of(bus2)  # the bus route groups per device
    assert group_of(bus1)[1] == "bus_speeding · b1"
