from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError

from rules.notify.redact import Redactor, redact_url
from rules.notify.render import Renderer
from rules.store import Alert
from rules.timeutil import format_en, format_th
from tests.rules.conftest import bkk


def alert(**kw: object) -> Alert:
    base: dict[str, object] = dict(
        id="a1b2",
        rule="flood_level_overbank",
        device_id="P.1",
        city="chiangmai",
        district="mueang",
        feed="flood",
        severity="critical",
        state="firing",
        value=104.25,
        threshold=100.0,
        message_th="น้ำล้นตลิ่ง 104.25%",
        message_en="Overbank 104.25 %",
        labels={},
        started_ns=bkk(2026, 9, 14, 23, 30),
        fired_ns=None,
        resolved_ns=None,
        updated_ns=0,
    )
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


def test_bangkok_time_and_buddhist_era_year() -> None:
    t = bkk(2026, 9, 14, 23, 30)  # 16:30 UTC
    assert format_th(t) == "14 ก.ย. 2569 23:30 น."
    assert format_en(t) == "2026-09-14 23:30 (Asia/Bangkok)"
    assert format_th(bkk(2026, 12, 31, 23, 59)) == "31 ธ.ค. 2569 23:59 น."
    assert format_th(bkk(2027, 1, 1, 0, 0)) == "1 ม.ค. 2570 00:00 น."


def test_thai_and_english_message_with_ack_link() -> None:
    r = Renderer("https://nakhon.cm.go.th/")
    title, body = r.render([alert()], "firing", "ops", "both", 0)
    assert title == "[วิกฤต / Critical] แจ้งเตือน / Alert: น้ำล้นตลิ่ง 104.25%"
    th, en = body.split("———")
    assert "น้ำล้นตลิ่ง 104.25%" in th and "14 ก.ย. 2569 23:30 น." in th
    assert "Overbank 104.25 %" in en and "2026-09-14 23:30 (Asia/Bangkok)" in en
    assert body.count("https://nakhon.cm.go.th/api/v1/alerts/a1b2/ack") == 2


def test_resolved_and_acknowledged_rendering() -> None:
    r = Renderer()
    a = alert(state="resolved", resolved_ns=bkk(2026, 9, 15, 1, 0), ack_by="somchai", ack_ns=bkk(2026, 9, 15, 0, 5))
    title, body = r.render([a], "resolved", "ops", "th", 0)
    assert title == "[วิกฤต] คลี่คลายแล้ว: น้ำล้นตลิ่ง 104.25%"  # a Thai receiver: Thai only
    assert "คลี่คลายเมื่อ: 15 ก.ย. 2569 01:00 น." in body
    assert "รับทราบโดย somchai" in body and "/ack" not in body
    assert "Acknowledge" not in body  # Thai only


def test_rule_summary_templates_are_sandboxed() -> None:
    r = Renderer()
    assert r.render_summary("{{ value | num }} / {{ missing }}", {"value": 12.5}) == "12.5 / -"
    with pytest.raises(SecurityError):
        r.render_summary("{{ ''.__class__.__mro__ }}", {})


def test_redaction_of_apprise_urls() -> None:
    url = "mailtos://alerts:S3cr3tPass@smtp.city.go.th?to=ops@city.go.th"
    assert "S3cr3tPass" not in redact_url(url) and redact_url(url).startswith("mailtos://***@smtp.city.go.th")
    line = "line://AbCdEfGhIjKlMnOp1234567890/U0123456789abcdef"
    assert "AbCdEf" not in redact_url(line)
    tg = "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100123"
    redact = Redactor([url, line, tg])
    msg = "failed for tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/ pass=S3cr3tPass"
    assert "AAHdq" not in redact(msg) and "S3cr3tPass" not in redact(msg)


def test_a_summary_rendered_again_from_its_memo_is_the_text_a_fresh_render_gives() -> None:
    """The memo of rendered summaries (a storm repeats values) must never hand back a text of other inputs:
    1, 1.0 and True, 0.0 and -0.0, a missing field, a renamed city, a value read through an item."""
    template = ("{{ device.name }} ({{ device.city_name }}): {{ value }} {{ fields.level_m }} "
                "{{ fields['n'] }} {{ 'up' if threshold else 'down' }}")
    memo = Renderer()
    names: dict[str, tuple[str, str]] = {"cm": ("เชียงใหม่", "Chiang Mai")}
    memo.city_names = names.get
    contexts = []
    for value in (1, 1.0, True, 0.0, -0.0, None, "one"):
        for fields in ({"level_m": 2.5, "n": 1}, {"level_m": 2.5}, {}, {"level_m": 2.50001, "n": 1.0}):
            contexts.append({"device": {"name": "S1", "city": "cm"}, "value": value, "fields": fields,
                             "threshold": value})
    seen = set()
    for _ in range(2):  # the second pass renders from the memo
        for ctx in contexts:
            fresh = Renderer()
            fresh.city_names = memo.city_names
            expected = fresh.render_summary(template, ctx, "en")
            assert memo.render_summary(template, ctx, "en") == expected
            seen.add(expected)
    assert len(seen) == len(contexts)  # every input its own text: nothing was served from another's
    names["cm"] = ("เชียงใหม่", "Chiang Mai City")  # the registry renamed the city: the memo does not hide it
    ctx = contexts[0]
    assert "Chiang Mai City" in memo.render_summary(template, ctx, "en")


def test_a_summary_reading_a_whole_mapping_or_calling_a_method_is_rendered_every_time() -> None:
    memo = Renderer()
    for template in ("{{ fields }}", "{% for k, v in fields.items() %}{{ k }}={{ v }} {% endfor %}"):
        ctx = {"fields": {"a": 1}}
        assert memo.render_summary(template, ctx, "en") == Renderer().render_summary(template, ctx, "en")
        ctx["fields"]["a"] = 2
        assert "2" in memo.render_summary(template, ctx, "en")
