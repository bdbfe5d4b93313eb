"""Staff tokens: expiry, last use, city scope on devices, alerts and silences, failed-auth counting and rate
limit, and the authenticated actor on acknowledgements and silences (audited). The gateway app with the
rules router mounted, on one migrated registry database, as `nakhon run` serves it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from gateway.api import create_app, require_role
from gateway.api.auth import AuthFailureLimiter
from gateway.broker import FakeProvisioner
from gateway.registry import RegistryStore
from gateway.registry.schemas import DeviceSpec
from rules.api import build_router
from rules.store import AlertStore

HOME, OTHER = "chiangmai", "lampang"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stack:
    def __init__(self, client: TestClient, store: RegistryStore, alerts: AlertStore, clock: FakeClock) -> None:
        self.client = client
        self.store = store
        self.alerts = alerts
        self.clock = clock
        self.tokens: dict[str, str] = {}

    def token(self, name: str, role: str, **kw: Any) -> str:
        self.tokens[name] = self.store.tokens.create(name, role, actor="test", **kw)[1]
        return self.tokens[name]

    def call(self, method: str, path: str, name: str | None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[name]}"} if name else {}
        return self.client.request(method, f"/api/v1{path}", headers=headers, **kw)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    store = RegistryStore.for_data_dir(tmp_path)
    store.migrate()
    alerts = AlertStore(store.url)
    clock = FakeClock()
    app = create_app(
        store, FakeProvisioner(), extra_routers=[build_router(alerts, require_role, audit=store.audit.record)]
    )
    app.state.auth_limiter = AuthFailureLimiter(max_failures=5, window_s=60, clock=clock)
    for device_id, city in (("home-1", HOME), ("away-1", OTHER)):
        store.devices.create(
            DeviceSpec(device_id=device_id, feed="flood", city=city, district="Mueang"),  # type: ignore[arg-type]
            actor="test",
        )
    with TestClient(app) as client:
        s = Stack(client, store, alerts, clock)
        s.token("admin", "admin")
        s.token("local-eng", "engineer", cities=[HOME])
        s.token("local-ops", "operator", cities=[HOME])
        yield s
    alerts.close()
    store.close()


def open_alert(alerts: AlertStore, device_id: str, city: str) -> str:
    alert, _ = alerts.open_alert(
        rule="flood_level_high", device_id=device_id, city=city, district="Mueang", feed="flood",
        severity="warning", state="firing", t_ns=time.time_ns(), message_th="ท", message_en="e",
    )
    return alert.id


# ---------------------------------------------------------------- city scope (attacks)


def test_city_scoped_engineer_touching_another_citys_device_is_refused(stack: Stack) -> None:
    eng = "local-eng"
    listed = stack.call("GET", "/devices", eng).json()
    assert [d["device_id"] for d in listed["items"]] == ["home-1"] and listed["total"] == 1
    for method, path, body in (
        ("GET", "/devices/away-1", None),
        ("GET", "/devices/away-1/diagnostics", None),
        ("GET", "/devices/away-1/overrides", None),
        ("PATCH", "/devices/away-1", {"name": "mine now"}),
        ("DELETE", "/devices/away-1", None),
        ("POST", "/devices/away-1/rotate-credentials", None),
        ("POST", "/devices/away-1/maintenance", {"until": None}),
        ("PUT", "/devices/away-1/overrides", {"thresholds": {}, "calibration": {}}),
    ):
        response = stack.call(method, path, eng, json=body)
        assert response.status_code == 404, (method, path, response.text)  # as if it did not exist
    assert stack.call("POST", "/devices", eng, json={
        "device_id": "planted", "feed": "flood", "city": OTHER, "district": "Mueang"}).status_code == 403
    assert stack.call("PATCH", "/devices/home-1", eng, json={"city": OTHER}).status_code == 403
    csv = ("device_id,feed,city,district,lat,lon,name\n"
           f"away-1,flood,{HOME},Mueang,,,moved into my city\nplanted-2,flood,{OTHER},Mueang,,,x\n")
    imported = stack.client.post("/api/v1/devices/import", content=csv, headers={
        "Authorization": f"Bearer {stack.tokens[eng]}", "content-type": "text/csv"})
    assert imported.status_code == 422 and {e["row"] for e in imported.json()["errors"]} == {2, 3}
    assert stack.store.devices.get("away-1").city == OTHER and stack.store.devices.get("away-1").name == ""
    assert not stack.store.devices.exists("planted") and not stack.store.devices.exists("planted-2")
    # what concerns every city is not for a scoped token
    assert stack.call("GET", "/audit", eng).status_code == 403
    assert stack.call("POST", "/profiles", eng, json={"name": "p", "feed": "air"}).status_code == 403
    # and its own city works
    assert stack.call("PATCH", "/devices/home-1", eng, json={"name": "สะพาน"}).status_code == 200


def test_city_scoped_operator_touching_another_citys_alerts_and_silences_is_refused(stack: Stack) -> None:
    ops = "local-ops"
    mine, theirs = open_alert(stack.alerts, "home-1", HOME), open_alert(stack.alerts, "away-1", OTHER)
    assert [a["id"] for a in stack.call("GET", "/alerts", ops).json()] == [mine]
    assert stack.call("GET", "/alerts", ops, params={"city": OTHER}).json() == []
    assert stack.call("GET", f"/alerts/{theirs}", ops).status_code == 404
    assert stack.call("POST", f"/alerts/{theirs}/ack", ops, json={"comment": "x"}).status_code == 404
    assert stack.alerts.get(theirs).ack_by is None
    for matchers in ([f"city={OTHER}"], ["device_id=away-1"], ["severity=warning"], [f"city=~{HOME}|{OTHER}"]):
        response = stack.call("POST", "/silences", ops, json={"matchers": matchers, "duration": "1h"})
        assert response.status_code == 403, matchers
    theirs_silence = stack.call("POST", "/silences", "admin", json={"matchers": [f"city={OTHER}"], "duration": "1h"})
    assert theirs_silence.status_code == 201
    assert stack.call("GET", "/silences", ops).json() == []
    assert stack.call("DELETE", f"/silences/{theirs_silence.json()['id']}", ops).status_code == 404
    ok = stack.call("POST", "/silences", ops, json={"matchers": [f"city={HOME}", "rule=flood_level_high"],
                                                   "duration": "1h"})
    assert ok.status_code == 201
    assert stack.call("POST", f"/alerts/{mine}/ack", ops, json={"comment": "ดูแล้ว"}).status_code == 200


def _delivered(alerts: AlertStore, alert_id: str, receiver: str) -> None:
    assert alerts.claim_notification(dedup_key=f"{receiver}:{alert_id}", message_id=alert_id[:16],
                                     alert_id=alert_id, receiver=receiver, group_key="", kind="firing",
                                     now_ns=time.time_ns())


def test_city_scoped_operator_reading_another_citys_notifications_sees_only_its_own(stack: Stack) -> None:
    mine, theirs = open_alert(stack.alerts, "home-1", HOME), open_alert(stack.alerts, "away-1", OTHER)
    _delivered(stack.alerts, mine, "line-home")
    _delivered(stack.alerts, theirs, "line-away")
    _delivered(stack.alerts, "0" * 32, "orphan")  # about no known alert, so of no city

    def seen(name: str, **params: str) -> set[str]:
        response = stack.call("GET", "/notifications", name, params=params)
        assert response.status_code == 200, response.text
        return {n["alert_id"] for n in response.json()}

    assert seen("admin") == {mine, theirs, "0" * 32}
    assert seen("local-ops") == {mine}
    # asking for the other city's alert or receiver by name finds nothing
    assert seen("local-ops", alert_id=theirs) == set()
    assert seen("local-ops", receiver="line-away") == set()
    assert seen("local-ops", failed="false") == {mine}


# ---------------------------------------------------------------- actor and audit


def test_acks_and_silences_record_the_authenticated_caller_and_are_audited(stack: Stack) -> None:
    alert_id = open_alert(stack.alerts, "home-1", HOME)
    acked = stack.call("POST", f"/alerts/{alert_id}/ack", "local-ops", json={"comment": "รับทราบ"})
    assert acked.json()["ack_by"] == "local-ops"
    forged = stack.call("POST", "/silences", "local-ops", json={
        "matchers": [f"city={HOME}"], "duration": "1h", "creator": "someone-else"})
    assert forged.status_code == 422
    silence = stack.call("POST", "/silences", "local-ops", json={"matchers": [f"city={HOME}"], "duration": "1h"})
    assert silence.json()["created_by"] == "local-ops"
    stack.call("DELETE", f"/silences/{silence.json()['id']}", "local-ops")
    audit = stack.call("GET", "/audit", "admin", params={"actor": "token:local-ops"}).json()["items"]
    assert [(e["action"], e["entity_id"]) for e in reversed(audit)] == [
        ("alert.ack", alert_id),
        ("silence.create", silence.json()["id"]),
        ("silence.expire", silence.json()["id"]),
    ]


# ---------------------------------------------------------------- expiry, last use


def test_expired_token_is_refused(stack: Stack) -> None:
    stack.token("temp", "viewer", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    stack.token("later", "viewer", expires_at=datetime.now(UTC) + timedelta(days=1))
    assert stack.call("GET", "/devices", "temp").status_code == 401
    assert stack.call("GET", "/devices", "later").status_code == 200


def test_token_records_when_it_was_last_used(stack: Stack) -> None:
    stack.token("reader", "viewer")
    assert _token(stack, "reader")["last_used_at"] is None
    stack.call("GET", "/devices", "reader")
    used = _token(stack, "reader")["last_used_at"]
    assert used is not None and datetime.fromisoformat(used) <= datetime.now(UTC)


def _token(stack: Stack, name: str) -> dict[str, Any]:
    return next(t for t in stack.call("GET", "/tokens", "admin").json() if t["name"] == name)


def test_created_token_carries_expiry_and_cities(stack: Stack) -> None:
    created = stack.call("POST", "/tokens", "admin", json={
        "name": "pattaya-eng", "role": "engineer", "cities": ["pattaya"], "expires_at": "2027-01-01T00:00:00+07:00"})
    assert created.status_code == 201, created.text
    assert created.json()["token"]["cities"] == ["pattaya"]
    assert created.json()["token"]["expires_at"].startswith("2026-12-31T17:00:00")
    assert stack.call("POST", "/tokens", "local-eng", json={"name": "x", "role": "viewer"}).status_code == 403


# ---------------------------------------------------------------- failed authentication


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("nakhon_api_auth_failures_total", {"reason": reason}) or 0.0


def test_guessing_tokens_is_counted_and_rate_limited_per_address(stack: Stack) -> None:
    invalid_before, limited_before = _failures("invalid"), _failures("rate_limited")
    guess = {"Authorization": "Bearer guess-" + "0" * 40}
    for _ in range(5):
        assert stack.client.get("/api/v1/devices", headers=guess).status_code == 401
    blocked = stack.client.get("/api/v1/devices", headers=guess)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) == 60
    assert blocked.json()["error"] == "too_many_failed_authentications" and blocked.json()["message_th"]
    # even the right token waits: the address is what is limited
    assert stack.call("GET", "/devices", "admin").status_code == 429
    assert _failures("invalid") - invalid_before == 5 and _failures("rate_limited") - limited_before == 2
    stack.clock.now += 60
    assert stack.call("GET", "/devices", "admin").status_code == 200


def test_limiter_forgets_the_oldest_address_when_full() -> None:
    clock = FakeClock()
    limiter = AuthFailureLimiter(max_failures=1, window_s=60, max_addresses=2, clock=clock)
    for address in ("a", "b", "c"):
        limiter.record_failure(address)
    assert limiter.retry_after("a") is None  # forgotten: memory stays bounded
    assert limiter.retry_after("b") == 60 and limiter.retry_after("c") == 60


def test_silence_ending_beyond_what_the_store_can_hold_is_refused_not_a_server_error(stack: Stack) -> None:
    for body in ({"ends_at": "7033-09-11T21:04:27-04:53"}, {"duration": "100000000d"}):
        response = stack.call("POST", "/silences", "admin", json={"matchers": [f"city={HOME}"], **body})
        assert response.status_code == 422, (body, response.text)
    assert stack.call("GET", "/silences", "admin").json() == []


def test_silence_time_given_as_a_number_is_refused(stack: Stack) -> None:
    response = stack.call("POST", "/silences", "admin", json={
        "matchers": [f"city={HOME}"], "starts_at": 0, "ends_at": "2000-01-01T00:00:00Z"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "starts_at"


def test_inputs_the_schema_forbids_are_refused_a_number_as_a_time_false_as_a_number(stack: Stack) -> None:
    for method, path, kw in (
        ("POST", "/tokens", {"json": {"name": "t", "role": "viewer", "expires_at": 0}}),
        ("GET", "/audit", {"params": {"until": "0.5"}}),
        ("PUT", "/devices/home-1/overrides", {"json": {"thresholds": {"level_m": False}}}),
        ("PUT", "/devices/home-1/overrides", {"json": {"calibration": {"level_m": {"scale": "2"}}}}),
        ("PATCH", "/devices/home-1", {"json": {"dev_eui": ""}}),
        ("PATCH", "/devices/home-1", {"json": {"site": {"bank_level_m": True}}}),
    ):
        response = stack.call(method, path, "admin", **kw)
        assert response.status_code == 422, (method, path, kw, response.text)
        assert response.json()["errors"][0]["in"] in ("body", "query")
