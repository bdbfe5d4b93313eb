"""Line protocol: exact expectations, and influxdb_client's encoder as an oracle (also property-based)."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point as OraclePoint
from influxdb_client import WritePrecision

from collectors.lineprotocol import LineProtocolError, encode_batch, encode_point
from core.model import FieldValue, Point

_ESC_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})


def split_unescaped(text: str, sep: str, *, quotes: bool = False) -> list[str]:
    """Split on `sep` where it is neither backslash-escaped nor (with `quotes`) inside a quoted string."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    in_quotes = False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if quotes and c == '"' and (in_quotes or (i > 0 and text[i - 1] == "=")):
            in_quotes = not in_quotes
        if c == sep and not in_quotes:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def parse(line: str) -> tuple[str, dict[str, str], str]:
    """(measurement and tags as written, {field key as written: raw value}, timestamp).

    Quotes mean something only at the start of a field value (a key may contain an escaped-free `"`)."""
    head, *rest = split_unescaped(line, " ")  # quotes mean nothing before the fields
    text = " ".join(rest)
    out: dict[str, str] = {}
    i = 0
    while True:
        key_start = i
        while text[i] != "=":
            i += 2 if text[i] == "\\" else 1
        key = text[key_start:i]
        i += 1
        value_start = i
        if text[i] == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        else:
            while text[i] not in ", ":
                i += 1
        out[key] = text[value_start:i]
        if text[i] == " ":
            return head, out, text[i + 1 :]
        i += 1


def assert_same_as_oracle(p: Point) -> None:
    oracle = OraclePoint(p.measurement)
    for k, v in p.tags.items():
        oracle.tag(k, v)
    for k, fv in p.fields.items():
        oracle.field(k, fv)
    oracle.time(p.time_ns, WritePrecision.NS)
    expected = oracle.to_line_protocol()
    ours = encode_point(p)
    ours_head, ours_fields, ours_ts = parse(ours)
    exp_head, exp_fields, exp_ts = parse(expected)
    assert ours_head == exp_head
    assert ours_ts == exp_ts
    assert ours_fields.keys() == exp_fields.keys()
    for k, value in p.fields.items():
        escaped = k.translate(_ESC_KEY)
        raw, theirs = ours_fields[escaped], exp_fields[escaped]
        if type(value) is float:
            # the oracle trims ".0" (still a float to InfluxDB); we always write repr(float)
            assert raw == repr(value)
            assert float(raw) == float(theirs)
        else:
            assert raw == theirs


# --- exact expectations ---


def test_full_point() -> None:
    p = Point(
        "air quality,x",
        {"feed": "air", "device_id": "a=1", "district": "เขต บางรัก", "note": "a,b", "empty": ""},
        {"pm25": 12.0, "n": 3, "ok": True, "bad": False, "msg": 'say "hi" \\ ok', "th": "ฝนตก"},
        1_700_000_000_000_000_000,
    )
    assert encode_point(p) == (
        "air\\ quality\\,x,device_id=a\\=1,district=เขต\\ บางรัก,feed=air,note=a\\,b "
        'pm25=12.0,n=3i,ok=true,bad=false,msg="say \\"hi\\" \\\\ ok",th="ฝนตก" 1700000000000000000'
    )


def test_batch_is_newline_joined_utf8() -> None:
    a = Point("m", {"d": "บางรัก"}, {"v": 1.5}, 1)
    b = Point("m", {}, {"v": -2.0}, 2)
    assert encode_batch([a, b]) == "m,d=บางรัก v=1.5\nm v=-2.0 2".replace("v=1.5\n", "v=1.5 1\n").encode()
    assert encode_batch([]) == b""


def test_float_forms() -> None:
    assert encode_point(Point("m", {}, {"v": 1e16}, 1)) == "m v=1e+16 1"
    assert encode_point(Point("m", {}, {"v": -0.0}, 1)) == "m v=-0.0 1"
    assert encode_point(Point("m", {}, {"v": 0.1 + 0.2}, 1)) == "m v=0.30000000000000004 1"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(bad: float) -> None:
    with pytest.raises(LineProtocolError) as info:
        encode_point(Point("m", {}, {"v": bad}, 1))
    assert info.value.key == "v"


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        (Point("", {}, {"v": 1.0}, 1), "empty measurement"),
        (Point("#m", {}, {"v": 1.0}, 1), "comment"),
        (Point("m", {}, {}, 1), "no fields"),
        (Point("m", {"a": "x\ny"}, {"v": 1.0}, 1), "control character"),
        (Point("m", {"a": "x\\"}, {"v": 1.0}, 1), "backslash"),
        (Point("m", {"a\\,b": "x"}, {"v": 1.0}, 1), "backslash"),
        (Point("m", {}, {"a\\ b": 1.0}, 1), "backslash"),
        (Point("m", {}, {"": 1.0}, 1), "empty field key"),
        (Point("m", {}, {"v": 2**63}, 1), "int64"),
        (Point("m", {}, {"v": 1.0}, 1.5), "time_ns"),  # type: ignore[arg-type]
        (Point("m", {}, {"v": None}, 1), "unsupported"),  # type: ignore[dict-item]
    ],
)
def test_points_without_a_faithful_form_are_refused(point: Point, reason: str) -> None:
    with pytest.raises(LineProtocolError, match=reason):
        encode_point(point)


def test_batch_error_names_the_index() -> None:
    with pytest.raises(LineProtocolError) as info:
        encode_batch([Point("m", {}, {"v": 1.0}, 1), Point("m", {}, {"v": math.nan}, 2)])
    assert info.value.index == 1


def test_tags_sorted_and_empty_values_omitted() -> None:
    assert encode_point(Point("m", {"z": "1", "a": "", "b": "2"}, {"v": 1}, 5)) == "m,b=2,z=1 v=1i 5"


# --- oracle ---


def test_oracle_on_a_typical_point() -> None:
    assert_same_as_oracle(
        Point(
            "flood_level",
            {"device_id": "fl-01", "feed": "flood", "city": "bangkok", "district": "เขต บางรัก", "x": "a,b=c d"},
            {"level_m": 1.0, "rate": 0.25, "n": 3, "alarm": False, "note": 'a "b" \\ c'},
            1_763_700_000_123_456_789,
        )
    )


_text = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\t")
name = st.text(_text, min_size=1, max_size=12).filter(lambda s: not re.search(r"\\([,= ]|$)", s))
measurement = name.filter(lambda s: not s.startswith("#"))
tag_value = st.one_of(st.just(""), name)
field_value: st.SearchStrategy[FieldValue] = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
)


POINT_PARTS = {
    "measurement": measurement,
    "tags": st.dictionaries(name, tag_value, max_size=5),
    "fields": st.dictionaries(name, field_value, min_size=1, max_size=5),
    "time_ns": st.integers(min_value=-(2**62), max_value=2**62),
}


@settings(max_examples=300, deadline=None)
@given(**POINT_PARTS)
def test_matches_oracle(measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], time_ns: int) -> None:
    assert_same_as_oracle(Point(measurement, tags, fields, time_ns))


@settings(max_examples=200, deadline=None)
@given(**POINT_PARTS)
def test_a_series_encoded_again_from_the_memo_matches_the_oracle(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], time_ns: int
) -> None:
    """The series head is memoised: the second point of a series (same tags, in another order too) is encoded
    from the memo, and still exactly as the oracle encodes it."""
    assert_same_as_oracle(Point(measurement, tags, fields, time_ns))
    assert_same_as_oracle(Point(measurement, dict(reversed(list(tags.items()))), fields, time_ns + 1))
    assert_same_as_oracle(Point(measurement, dict(tags), fields, time_ns + 2))


def test_a_refused_tag_is_refused_every_time_not_memoised() -> None:
    bad = Point("m", {"device_id": "a\nb"}, {"v": 1.0}, 1)
    for _ in range(2):
        with pytest.raises(LineProtocolError, match="control character"):
            encode_point(bad)
    good = Point("m", {"device_id": "a"}, {"v": 1.0}, 1)
    assert encode_point(good) == encode_point(Point("m", {"device_id": "a"}, {"v": 1.0}, 1)) == "m,device_id=a v=1.0 1"


def test_the_series_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors import lineprotocol

    monkeypatch.setattr(lineprotocol, "_HEAD_CACHE_LIMIT", 10)
    lineprotocol._head_cache.clear()
    for i in range(25):
        assert encode_point(Point("m", {"device_id": f"d{i}"}, {"v": 1.0}, 1)) == f"m,device_id=d{i} v=1.0 1"
        assert len(lineprotocol._head_cache) <= 10
