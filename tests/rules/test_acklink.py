"""Signed one-click acknowledge links: signing, the page (GET changes nothing), the confirm (POST), the secret."""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from core.time import NS
from rules.acklink import AckLinkSigner, load_or_create_secret, resolve_secret
from rules.api import build_router
from rules.notify.render import Renderer
from rules.service import build_rules_service
from rules.settings import RulesSettings
from rules.store import Alert, AlertStore
from rules.timeutil import FakeClock
from tests.rules.conftest import T0, make_pipeline, minutes
from tests.rules.notify.test_pipeline import ROUTING, fire
from tests.rules.notify.test_render import alert as render_alert

PUBLIC = "https://nakhon.cm.go.th/city"
SECRET = b"k" * 32
LINK = re.compile(r"https://\S+/ack-link\?\S+")


def no_token_accepted(*_roles: str) -> Any:
    """A `require_role` that refuses everyone: the link routes must not depend on it."""

    def dependency() -> None:
        raise HTTPException(401, "no token")

    return dependency


def parse_link(url: str) -> tuple[str, str, str, str]:
    """(alert_id, receiver, exp, sig) of a link, checking its shape."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://nakhon.cm.go.th"
    m = re.fullmatch(r"/city/api/v1/alerts/([^/]+)/ack-link", parts.path)
    assert m, parts.path
    q = {k: v[0] for k, v in parse_qs(parts.query, strict_parsing=True).items()}
    assert set(q) == {"r", "exp", "sig"}
    return unquote(m.group(1)), q["r"], q["exp"], q["sig"]


def local(url: str) -> str:
    """The path and query the gateway sees behind the public URL's /city prefix."""
    parts = urlsplit(url)
    return parts.path.removeprefix("/city") + "?" + parts.query


@pytest.fixture
def signer() -> AckLinkSigner:
    return AckLinkSigner(SECRET)


@pytest.fixture
def app(store: AlertStore, clock: FakeClock, signer: AckLinkSigner) -> FastAPI:
    app = FastAPI()
    app.include_router(build_router(store, no_token_accepted, clock=clock, ack_links=signer))
    return app


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


def open_alert(store: AlertStore, device_id: str = "van-1", **kw: Any) -> Alert:
    values: dict[str, Any] = dict(
        rule="bus_child_left",
        device_id=device_id,
        city="chiangmai",
        district="mueang",
        feed="bus",
        severity="critical",
        state="firing",
        t_ns=T0,
        message_th="มีเด็กอยู่ในรถ",
        message_en="Child left on the bus",
    )
    values.update(kw)
    alert, _ = store.open_alert(**values)
    return alert


def form_of(url: str) -> dict[str, str]:
    _, r, exp, sig = parse_link(url)
    return {"r": r, "exp": exp, "sig": sig}


# ---- signing ------------------------------------------------------------------------------------------------


def test_signature_round_trip(signer: AckLinkSigner) -> None:
    url = signer.url(PUBLIC + "/", "a1b2", "line-bus", T0)
    alert_id, receiver, exp, sig = parse_link(url)
    assert (alert_id, receiver) == ("a1b2", "line-bus")
    assert int(exp) == T0 // NS + 7 * 86400  # 7 days by default
    link = signer.verify(alert_id, receiver, exp, sig, T0)
    assert link is not None and (link.alert_id, link.receiver, link.exp) == ("a1b2", "line-bus", int(exp))
    # receivers with spaces, Thai or URL syntax survive the query string
    odd = "ทีม น้ำ&r=x"
    assert signer.verify(*parse_link(signer.url(PUBLIC, "a1b2", odd, T0)), T0) is not None
    assert parse_link(signer.url(PUBLIC, "a1b2", odd, T0))[1] == odd


def test_tampered_links_are_rejected(signer: AckLinkSigner) -> None:
    alert_id, receiver, exp, sig = parse_link(signer.url(PUBLIC, "a1b2", "ops", T0))
    assert signer.verify("a1b3", receiver, exp, sig, T0) is None
    assert signer.verify(alert_id, "director", exp, sig, T0) is None
    assert signer.verify(alert_id, receiver, str(int(exp) + 86400), sig, T0) is None
    assert signer.verify(alert_id, receiver, exp, sig[:-1] + ("0" if sig[-1] != "0" else "1"), T0) is None
    assert signer.verify(alert_id, receiver, exp, sig.upper(), T0) is None
    assert signer.verify(alert_id, receiver, exp, "ก" * 64, T0) is None  # non-ASCII: no TypeError
    assert signer.verify(alert_id, receiver, exp, "", T0) is None
    assert signer.verify(alert_id, receiver, "1e10", sig, T0) is None
    assert AckLinkSigner(b"x" * 32).verify(alert_id, receiver, exp, sig, T0) is None  # another secret
    with pytest.raises(ValueError):
        AckLinkSigner(b"short")


def test_expired_links_are_rejected() -> None:
    signer = AckLinkSigner(SECRET, ttl_s=3600)
    alert_id, receiver, exp, sig = parse_link(signer.url(PUBLIC, "a1b2", "ops", T0))
    assert int(exp) == T0 // NS + 3600
    assert signer.verify(alert_id, receiver, exp, sig, T0 + 3599 * NS) is not None
    assert signer.verify(alert_id, receiver, exp, sig, T0 + 3600 * NS) is None


# ---- the page and the confirm -------------------------------------------------------------------------------


def test_get_shows_the_alert_and_does_not_acknowledge(
    client: TestClient, store: AlertStore, signer: AckLinkSigner
) -> None:
    a = open_alert(store)
    resp = client.get(local(signer.url(PUBLIC, a.id, "line-bus", T0)))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    assert html.index("ยืนยันการรับทราบ") < html.index("Acknowledge this alert")  # Thai first
    for text in ("bus_child_left", "van-1", "วิกฤต", "critical", "เกิดเหตุ", "firing", "มีเด็กอยู่ในรถ"):
        assert text in html
    assert "6 ม.ค. 2569 10:00 น." in html and "2026-01-06 10:00 (Asia/Bangkok)" in html  # Buddhist era in Thai
    assert '<form method="post">' in html and "รับทราบ / Acknowledge" in html
    assert resp.headers["cache-control"] == "no-store" and resp.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    for _ in range(3):  # link previews and mail scanners
        assert client.get(local(signer.url(PUBLIC, a.id, "line-bus", T0))).status_code == 200
    stored = store.get(a.id)
    assert stored is not None and stored.ack_ns is None and stored.ack_by is None


def test_post_acknowledges_once_and_reports_who_when(
    client: TestClient, store: AlertStore, clock: FakeClock, signer: AckLinkSigner
) -> None:
    a = open_alert(store)
    url = signer.url(PUBLIC, a.id, "line-bus", T0)
    clock.set(T0 + minutes(4))
    resp = client.post(local(url).split("?")[0], data={**form_of(url), "comment": "ครูตรวจรถแล้ว"})
    assert resp.status_code == 200, resp.text
    assert "รับทราบแล้ว" in resp.text and "Acknowledged, thank you" in resp.text
    assert "link:line-bus" in resp.text and "6 ม.ค. 2569 10:04 น." in resp.text
    stored = store.get(a.id)
    assert stored is not None
    assert (stored.ack_by, stored.ack_ns, stored.ack_comment) == ("link:line-bus", T0 + minutes(4), "ครูตรวจรถแล้ว")
    # a second person (another receiver's link), or a reload: the first acknowledgement stands
    clock.set(T0 + minutes(9))
    other = signer.url(PUBLIC, a.id, "director", T0)
    again = client.post(local(other).split("?")[0], data=form_of(other))
    assert again.status_code == 200 and "มีผู้รับทราบแล้ว" in again.text and "already acknowledged" in again.text
    assert "link:line-bus" in again.text and "10:04" in again.text
    page = client.get(local(other))
    assert page.status_code == 200 and "link:line-bus" in page.text and "<form" not in page.text
    stored = store.get(a.id)
    assert stored is not None and (stored.ack_by, stored.ack_ns) == ("link:line-bus", T0 + minutes(4))


def test_post_takes_the_signed_params_from_the_query_too(
    client: TestClient, store: AlertStore, signer: AckLinkSigner
) -> None:
    a = open_alert(store)
    resp = client.post(local(signer.url(PUBLIC, a.id, "ops", T0)))  # e.g. curl -X POST '<link>'
    assert resp.status_code == 200 and "Acknowledged, thank you" in resp.text
    stored = store.get(a.id)
    assert stored is not None and stored.ack_by == "link:ops"


def test_bad_or_expired_links_answer_403_and_change_nothing(
    client: TestClient, store: AlertStore, clock: FakeClock, signer: AckLinkSigner
) -> None:
    a = open_alert(store)
    url = signer.url(PUBLIC, a.id, "ops", T0)
    form = form_of(url)
    path = local(url).split("?")[0]
    bad = [
        client.get(local(url).replace("r=ops", "r=boss")),
        client.get(path),  # no parameters at all
        client.post(path, data={**form, "r": "boss"}),
        client.post(path, data={**form, "sig": "0" * 64}),
        client.post(path, data={**form, "exp": str(int(form["exp"]) + 1)}),
        client.post(path.replace(a.id, "0" * 32), data=form),  # another alert's id: 403, not 404
    ]
    clock.set(T0 + 7 * 86400 * NS)  # exactly at expiry
    bad += [client.get(local(url)), client.post(path, data=form)]
    for resp in bad:
        assert resp.status_code == 403
        assert "ลิงก์ไม่ถูกต้องหรือหมดอายุแล้ว" in resp.text and "invalid or has expired" in resp.text
        assert resp.text.index("ลิงก์ไม่ถูกต้อง") < resp.text.index("invalid or has expired")
        assert "signature" not in resp.text.lower() and form["sig"] not in resp.text
    stored = store.get(a.id)
    assert stored is not None and stored.ack_ns is None


def test_unknown_alert_answers_404(client: TestClient, signer: AckLinkSigner) -> None:
    url = signer.url(PUBLIC, "0" * 32, "ops", T0)
    assert client.get(local(url)).status_code == 404
    resp = client.post(local(url).split("?")[0], data=form_of(url))
    assert resp.status_code == 404 and "ไม่พบการแจ้งเตือนนี้" in resp.text and "Alert not found" in resp.text


def test_html_escapes_alert_fields(client: TestClient, store: AlertStore, signer: AckLinkSigner) -> None:
    evil = "<script>alert(1)</script>"
    a = open_alert(store, device_id=evil, message_th=f"ที่ {evil}", message_en=f"at {evil}")
    receiver = 'ops" onmouseover="x'
    resp = client.get(local(signer.url(PUBLIC, a.id, receiver, T0)))
    assert resp.status_code == 200
    assert "<script>" not in resp.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in resp.text
    assert 'value="ops&#34; onmouseover=&#34;x"' in resp.text  # the hidden field stays one attribute


# ---- messages carry the link; it stops reminders --------------------------------------------------------------


def test_rendered_thai_and_english_messages_carry_a_valid_link(signer: AckLinkSigner) -> None:
    r = Renderer(PUBLIC, ack_links=signer)
    _, body = r.render([render_alert()], "firing", "ops", "both", T0)
    th, en = body.split("———")
    for part, label in ((th, "กดรับทราบ: "), (en, "Acknowledge: ")):
        links = LINK.findall(part)
        assert len(links) == 1 and label + links[0] in part
        alert_id, receiver, exp, sig = parse_link(links[0])
        assert (alert_id, receiver) == ("a1b2", "ops")
        assert signer.verify(alert_id, receiver, exp, sig, T0 + 86400 * NS) is not None
    assert "/api/v1/alerts/a1b2/ack\n" not in body and not body.rstrip().endswith("/ack")  # no token-only URL
    # another receiver gets its own link
    _, body2 = r.render([render_alert()], "firing", "line-bus", "th", T0)
    assert parse_link(LINK.findall(body2)[0])[1] == "line-bus"


async def test_link_in_a_message_acknowledges_and_stops_reminders(
    store: AlertStore, clock: FakeClock, signer: AckLinkSigner
) -> None:
    pipe, mem = make_pipeline(store, clock, ROUTING, renderer=Renderer(PUBLIC, ack_links=signer))
    app = FastAPI()
    app.include_router(build_router(store, no_token_accepted, clock=clock, ack_links=signer))
    a = fire(store, "bus_child_left", "van-1", "bus", T0, "critical")
    await pipe.submit(a)
    for m in range(1, 12):
        clock.set(T0 + minutes(m))
        await pipe.tick()
    await pipe.drain()
    assert [m.kind for m in mem["line-bus"].sent] == ["firing", "reminder"]
    reminder = mem["line-bus"].sent[-1]
    url = LINK.findall(reminder.body)[0]
    assert reminder.payload["alerts"][0]["ack_url"] == url  # webhooks get the same link
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        page = await http.get(local(url))
        assert page.status_code == 200 and "<form" in page.text
        stored = store.get(a.id)
        assert stored is not None and not stored.acknowledged  # the GET changed nothing
        resp = await http.post(local(url).split("?")[0], data=form_of(url))
        assert resp.status_code == 200 and "Acknowledged, thank you" in resp.text
    stored = store.get(a.id)
    assert stored is not None and stored.ack_by == "link:line-bus" and stored.ack_ns == T0 + minutes(11)
    for m in range(12, 60):
        clock.set(T0 + minutes(m))
        await pipe.tick()
    await pipe.drain()
    assert [m.kind for m in mem["line-bus"].sent] == ["firing", "reminder"]  # no reminder at 20, 30, ...
    assert mem["director"].sent == []  # acknowledged before the 15-minute escalation
    await pipe.stop()


# ---- the secret ---------------------------------------------------------------------------------------------


def test_secret_file_is_made_once_with_mode_0600_and_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "data" / "ack-link.secret"
    old_umask = os.umask(0o022)
    try:
        first = load_or_create_secret(path)
    finally:
        os.umask(old_umask)
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    assert resolve_secret(None, path) == first
    assert [p.name for p in path.parent.iterdir()] == ["ack-link.secret"]  # no temporary file left
    assert first.hex() not in caplog.text
    # a configured secret wins over the file
    assert resolve_secret("s" * 32, path) == b"s" * 32
    with pytest.raises(ValueError):
        resolve_secret("too short", path)


def test_links_survive_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    routing = tmp_path / "routes.yaml"
    routing.write_text("receivers: [{name: ops}]\nroute: {receiver: ops}\n")
    settings = RulesSettings(
        database_url=f"sqlite:///{tmp_path / 'a.db'}",
        routing_file=routing,
        ack_link_secret_file=tmp_path / "ack-link.secret",
        ack_link_ttl_s=3600,
    )
    first = build_rules_service(settings, None)
    second = build_rules_service(settings, None)  # "after a restart"
    try:
        assert first.ack_links is not None and second.ack_links is not None
        url = first.pipeline.renderer.ack_url("a1b2", "ops", T0)
        alert_id, receiver, exp, sig = parse_link_any(url)
        assert int(exp) == T0 // NS + 3600
        assert second.ack_links.verify(alert_id, receiver, exp, sig, T0) is not None
        assert sig not in caplog.text
        secret = (tmp_path / "ack-link.secret").read_text().strip()
        assert secret not in caplog.text and secret not in repr(first.ack_links)
        paths = {getattr(r, "path", "") for r in first.router(no_token_accepted).routes}
        assert "/api/v1/alerts/{alert_id}/ack-link" in paths
    finally:
        first.store.close()
        second.store.close()


def parse_link_any(url: str) -> tuple[str, str, str, str]:
    parts = urlsplit(url)
    m = re.fullmatch(r".*/api/v1/alerts/([^/]+)/ack-link", parts.path)
    assert m, parts.path
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return unquote(m.group(1)), q["r"], q["exp"], q["sig"]


def test_nakhon_settings_choose_the_secret(tmp_path: Path) -> None:
    from nakhon.config import load_settings
    from nakhon.rules_wiring import rules_settings

    config = rules_settings(load_settings(data_dir=tmp_path / "data", metrics={"port": 0}))
    assert config.ack_link_secret is None and config.ack_link_secret_file == tmp_path / "data" / "ack-link.secret"
    assert config.ack_link_ttl_s == 7 * 86400
    configured = rules_settings(
        load_settings(
            data_dir=tmp_path / "data",
            metrics={"port": 0},
            rules={"ack_link_secret": "p" * 40, "ack_link_ttl_s": 86400},
        )
    )
    assert configured.ack_link_secret is not None and configured.ack_link_secret.get_secret_value() == "p" * 40
    assert configured.ack_link_ttl_s == 86400 and "p" * 40 not in repr(configured)
