"""Epoch magnitude thresholds and RFC 3339 parsing."""

from __future__ import annotations

import pytest

from collectors.errors import RejectedMessage
from collectors.formats._common import epoch_to_ns, mqtt_topic_matches, parse_rfc3339_ns

T = 1_714_557_600  # 2024-05-01T10:00:00Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T, T * 10**9),
        (T * 1000, T * 10**9),
        (T * 1_000_000, T * 10**9),
        (T * 1_000_000_000, T * 10**9),
        (99_999_999_999, 99_999_999_999 * 10**9),  # just under 1e11: still seconds (year 5138)
        (100_000_000_000, 100_000_000_000 * 10**6),  # 1e11: milliseconds (1973)
    ],
)
def test_epoch_units_by_magnitude(value: int, expected: int) -> None:
    assert epoch_to_ns(value) == expected


def test_rfc3339_offsets_agree() -> None:
    a = parse_rfc3339_ns("2024-05-01T17:00:00+07:00")
    b = parse_rfc3339_ns("2024-05-01T10:00:00Z")
    c = parse_rfc3339_ns("2024-05-01T05:00:00-05:00")
    assert a == b == c == T * 10**9


def test_rfc3339_fraction_precision() -> None:
    assert parse_rfc3339_ns("2020-02-12T15:15:46.014773143Z") % 10**9 == 14773143
    assert parse_rfc3339_ns("2020-02-12T15:15:46.5Z") % 10**9 == 500_000_000


def test_rfc3339_invalid_date() -> None:
    with pytest.raises(RejectedMessage):
        parse_rfc3339_ns("2023-02-29T00:00:00Z")


def test_mqtt_filter() -> None:
    assert mqtt_topic_matches("senml/#", "senml/a/b")
    assert mqtt_topic_matches("senml/+", "senml/a")
    assert not mqtt_topic_matches("senml/+", "senml/a/b")
    assert not mqtt_topic_matches("senml/#", "other/a")
