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
