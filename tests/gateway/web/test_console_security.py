"""The console over HTTP (no browser needed), attacked: forged forms, cross-site posts, stale sessions, open
redirects, wrong roles, another city's data; the cookie's flags; API tokens unaffected; `nakhon users`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from gateway.api.app import create_app
from gateway.broker import FakeProvisioner
from gateway.registry.schemas import DeviceSpec
from gateway.registry.store import RegistryStore
from gateway.web import Console, ConsoleQueries, UserStore, build_console_router
from gateway.web.cli import users_app
from rules.store import AlertStore

PASSWORD = "ข้าวเหนียว-mamuang-42"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryStore]:
    store = RegistryStore.for_data_dir(tmp_path)
    store.migrate()
    users = UserStore(store)
    users.add_user("somchai", PASSWORD, "engineer", actor="test")
    users.add_user("malee", PASSWORD, "operator", actor="test")
    users.add_user("cm-eng", PASSWORD, "engineer", cities=["chiangmai"], actor="test")
    for device_id, city in (("air-cm-01", "chiangmai"), ("air-lc-01", "laem-chabang")):
        store.devices.create(DeviceSpec(device_id=device_id, feed="air", city=city, district="เมือง"), actor="test")
    yield store
    store.close()


@pytest.fixture
def app(registry: RegistryStore) -> Iterator[Any]:
    app = create_app(registry, FakeProvisioner())
    alerts = AlertStore(registry.url)
    console = Console(registry, UserStore(registry), app.state.device_service, ConsoleQueries(registry.engine, None),
                      alerts)
    app.include_router(build_console_router(console))
    app.state.alerts = alerts
    yield app
    alerts.close()


def client(app: Any, *, https: bool = False) -> TestClient:
    return TestClient(app, base_url="https://testserver" if https else "http://testserver")


def login(c: TestClient, username: str, password: str = PASSWORD, next_path: str = "/console/devices") -> Any:
    form = c.get("/console/login")
    token = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
    return c.post("/console/login", data={"csrf": token, "username": username, "password": password,
                                          "next": next_path}, follow_redirects=False)


def csrf_of(c: TestClient) -> str:
    return CSRF.search(c.get("/console/devices").text).group(1)  # type: ignore[union-attr]


def test_session_cookie_is_httponly_samesite_and_secure_only_over_tls(app: Any) -> None:
    plain = login(client(app), "somchai").headers["set-cookie"]
    assert "HttpOnly" in plain and "SameSite=lax" in plain and "Path=/console" in plain and "Secure" not in plain
    tls = login(client(app, https=True), "somchai").headers["set-cookie"]
    assert "nakhon_session=" in tls and "HttpOnly" in tls and "Secure" in tls


def test_wrong_password_and_unknown_user_get_the_same_answer(app: Any) -> None:
    c = client(app)
    wrong, unknown = login(c, "somchai", "not-the-password"), login(c, "nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert "ชื่อผู้ใช้หรือรหัสผ่านไม่ถูกต้อง" in wrong.text and "ชื่อผู้ใช้หรือรหัสผ่านไม่ถูกต้อง" in unknown.text
    assert "set-cookie" not in wrong.headers or "nakhon_session" not in wrong.headers["set-cookie"]


def test_repeated_failures_lock_the_login_page(app: Any) -> None:
    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("nakhon_console_logins_total", {"outcome": outcome}) or 0.0

    before = {outcome: count(outcome) for outcome in ("wrong", "locked", "ok")}
    c = client(app)
    for _ in range(5):
        login(c, "malee", "guess-guess-guess")
    locked = login(c, "malee")  # the right password, refused while locked
    assert locked.status_code == 429 and "โปรดลองใหม่ในอีก" in locked.text
    # the fifth wrong one already answers "locked": it is the one that locked the account
    assert count("wrong") - before["wrong"] == 4 and count("locked") - before["locked"] == 2
    assert count("ok") == before["ok"]


def test_login_without_its_form_token_is_refused(app: Any) -> None:
    c = client(app)
    refused = c.post("/console/login", data={"csrf": "forged", "username": "somchai", "password": PASSWORD},
                     follow_redirects=False)
    assert refused.status_code == 403 and "nakhon_session" not in refused.headers.get("set-cookie", "")


def test_next_cannot_redirect_off_site(app: Any) -> None:
    for hostile in ("//evil.example/x", "https://evil.example/", "/console\\@evil.example", "/api/v1/tokens"):
        answer = login(client(app), "somchai", next_path=hostile)
        assert answer.headers["location"] == "/console/devices", hostile


def test_change_without_csrf_token_or_from_another_site_changes_nothing(app: Any, registry: RegistryStore) -> None:
    c = client(app)
    login(c, "somchai")
    token = csrf_of(c)
    form = {"device_id": "air-lc-50", "feed": "air", "city": "laem-chabang", "district": "x"}
    assert c.post("/console/register", data=form).status_code == 403
    assert c.post("/console/register", data={**form, "csrf": "forged"}).status_code == 403
    other_site = c.post("/console/register", data={**form, "csrf": token}, headers={"Origin": "https://evil.example"})
    assert other_site.status_code == 403
    assert c.post("/console/devices/air-lc-01/retire", data={}).status_code == 403
    assert not registry.devices.exists("air-lc-50")
    assert registry.devices.get("air-lc-01").status == "active"
    assert c.post("/console/register", data={**form, "csrf": token}).status_code == 200  # the real form works
    assert registry.devices.exists("air-lc-50")


def test_logout_ends_the_session_on_the_server(app: Any) -> None:
    c = client(app)
    login(c, "somchai")
    cookie = c.cookies.get("nakhon_session")
    c.post("/console/logout", data={"csrf": csrf_of(c)})
    assert cookie
    replay = client(app)
    replay.cookies.set("nakhon_session", cookie)
    answer = replay.get("/console/devices", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login")


def test_operator_may_not_change_devices_even_with_a_valid_form(app: Any, registry: RegistryStore) -> None:
    c = client(app)
    login(c, "malee")
    token = csrf_of(c)
    assert c.get("/console/register").status_code == 403
    assert c.post("/console/devices/air-lc-01/retire", data={"csrf": token}).status_code == 403
    assert c.post("/console/devices/air-lc-01/maintenance", data={"csrf": token, "hours": "2"}).status_code == 403
    assert registry.devices.get("air-lc-01").status == "active"
    assert not registry.devices.get("air-lc-01").in_maintenance


def test_scoped_engineer_cannot_import_or_silence_another_city(app: Any, registry: RegistryStore) -> None:
    c = client(app)
    login(c, "cm-eng")
    token = csrf_of(c)
    csv = ("device_id,feed,city,district,lat,lon,name\n"
           "air-cm-02,air,chiangmai,เมือง,18.8,98.9,a\n"
           "air-lc-01,air,chiangmai,เมือง,18.8,98.9,moved here\n"  # another city's device, pulled into theirs
           "air-lc-02,air,laem-chabang,บางละมุง,13.1,100.9,b\n")
    answer = c.post("/console/import", data={"csrf": token}, files={"file": ("d.csv", csv.encode(), "text/csv")})
    assert answer.status_code == 422
    where = re.findall(r'<td data-label="บรรทัด">(\d+)</td><td data-label="คอลัมน์">([a-z_]+)</td>', answer.text)
    assert where == [("3", "device_id"), ("4", "city")]
    assert not registry.devices.exists("air-cm-02") and registry.devices.get("air-lc-01").city == "laem-chabang"
    silence = c.post("/console/silences", data={"csrf": token, "matchers": "rule=air_pm25_high", "duration": "2h"})
    assert silence.status_code == 422
    assert app.state.alerts.list_silences() == []
    ok = c.post("/console/silences", data={"csrf": token, "matchers": "city=chiangmai", "duration": "2h"},
                follow_redirects=False)
    assert ok.status_code == 303 and len(app.state.alerts.list_silences()) == 1


def test_scoped_engineer_cannot_act_on_another_citys_device_or_alert(app: Any, registry: RegistryStore) -> None:
    alert, _ = app.state.alerts.open_alert(rule="r", device_id="air-lc-01", city="laem-chabang", district="x",
                                           feed="air", severity="warning", state="firing", t_ns=1)
    c = client(app)
    login(c, "cm-eng")
    token = csrf_of(c)
    assert c.post("/console/devices/air-lc-01/retire", data={"csrf": token}).status_code == 404
    assert c.post(f"/console/alerts/{alert.id}/ack", data={"csrf": token}).status_code == 404
    assert registry.devices.get("air-lc-01").status == "active"
    assert app.state.alerts.get(alert.id).ack_ns is None


def test_api_tokens_keep_working_and_a_console_cookie_opens_no_api(app: Any, registry: RegistryStore) -> None:
    _record, token = registry.tokens.create("scada", "viewer", actor="test")
    c = client(app)
    assert c.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    login(c, "somchai")
    assert c.get("/api/v1/devices").status_code == 401  # no cookie-authenticated API: nothing to forge there


def test_pages_forbid_framing_and_foreign_scripts_and_static_serves_only_its_files(app: Any) -> None:
    c = client(app)
    page = c.get("/console/login")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert c.get("/console/static/console.js").status_code == 200
    for hostile in ("../app.py", "..%2fapp.py", "console.css.bak", "%2e%2e%2fusers.py"):
        assert c.get(f"/console/static/{hostile}").status_code == 404, hostile


def test_pages_need_a_session(app: Any) -> None:
    c = client(app)
    for path in ("/console/devices", "/console/devices/air-lc-01", "/console/alerts", "/console/register"):
        answer = c.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login?next=")
    for path in ("/console/devices/rows", "/console/alerts/live", "/console/devices/air-lc-01/live"):
        assert c.get(path).status_code == 401


def test_users_cli_add_list_disable_reset_password(registry: RegistryStore) -> None:
    shell = typer.Typer()
    shell.add_typer(users_app, name="users")
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None) -> Any:
        return runner.invoke(shell, list(args), obj={"registry": lambda: registry}, input=stdin)

    added = run("users", "add", "wichai", "--role", "operator", "--city", "chiangmai", "--password-stdin",
                stdin="a-long-enough-password\n")
    assert added.exit_code == 0, added.output
    assert "a-long-enough-password" not in added.output
    listed = run("users", "list")
    assert "wichai\toperator\tchiangmai\tth\tactive" in listed.output
    assert run("users", "add", "x", "--role", "operator", "--password-stdin", stdin="short\n").exit_code == 2
    assert run("users", "disable", "wichai").exit_code == 0
    assert "wichai\toperator\tchiangmai\tth\tdisabled" in run("users", "list").output
    assert UserStore(registry).login("wichai", "a-long-enough-password").principal is None
    assert run("users", "reset-password", "wichai", "--password-stdin", stdin="the-new-password\n").exit_code == 0
    assert UserStore(registry).login("wichai", "the-new-password").principal is not None
    assert run("users", "disable", "nobody").exit_code == 1


def test_register_form_names_each_bad_field_and_registers_nothing(app: Any, registry: RegistryStore) -> None:
    c = client(app)
    login(c, "somchai")
    form = {"csrf": csrf_of(c), "device_id": "air-lc-60", "feed": "air", "city": "laem-chabang", "district": "x",
            "lat": "200", "heartbeat_s": "soon"}
    answer = c.post("/console/register", data=form)
    assert answer.status_code == 422
    assert 'data-testid="error-lat"' in answer.text and 'data-testid="error-heartbeat_s"' in answer.text
    assert 'data-testid="error-city"' not in answer.text
    assert not registry.devices.exists("air-lc-60")
    duplicate = c.post("/console/register", data={**form, "device_id": "air-lc-01", "lat": "13", "heartbeat_s": ""})
    assert duplicate.status_code == 409 and "ลงทะเบียนไว้แล้ว" in duplicate.text
