from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rules.api import build_router
from rules.store import AlertStore
from tests.rules.conftest import T0, minutes
from tests.rules.notify.test_receivers import stub_require_role

OPERATOR = {"x-role": "operator", "x-user": "somchai"}


@pytest.fixture
def client(store: AlertStore, clock: Any) -> TestClient:
    app = FastAPI()
    app.include_router(build_router(store, stub_require_role, clock=clock))
    return TestClient(app)


def seed(store: AlertStore) -> list[str]:
    ids = []
    for rule, dev, feed, sev, city in [
        ("flood_level_high", "g-1", "flood", "warning", "chiangmai"),
        ("bus_child_left", "van-1", "bus", "critical", "chiangmai"),
        ("air_aqi_th_unhealthy", "a-1", "air", "warning", "lampang"),
    ]:
        a, _ = store.open_alert(
            rule=rule,
            device_id=dev,
            city=city,
            district="mueang",
            feed=feed,
            severity=sev,
            state="firing",
            t_ns=T0,
            message_th="ท",
            message_en="e",
        )
        ids.append(a.id)
    store.resolve(ids[2], T0 + minutes(5))
    return ids


def test_list_alerts_with_filters(client: TestClient, store: AlertStore) -> None:
    seed(store)
    assert len(client.get("/api/v1/alerts").json()) == 3
    assert [a["device_id"] for a in client.get("/api/v1/alerts", params={"severity": "critical"}).json()] == ["van-1"]
    assert len(client.get("/api/v1/alerts", params={"state": "firing"}).json()) == 2
    assert len(client.get("/api/v1/alerts", params={"state": "open"}).json()) == 2
    assert [a["rule"] for a in client.get("/api/v1/alerts", params={"city": "lampang"}).json()] == [
        "air_aqi_th_unhealthy"
    ]
    assert len(client.get("/api/v1/alerts", params={"feed": "bus", "device_id": "van-1"}).json()) == 1
    assert client.get("/api/v1/alerts", params={"rule": "nope"}).json() == []
    assert client.get("/api/v1/alerts", params={"state": "weird"}).status_code == 422
    one = client.get("/api/v1/alerts").json()[0]
    assert one["started_at"].endswith("+00:00")  # stored and served in UTC


def test_ack_needs_operator_and_records_who_when_comment(client: TestClient, store: AlertStore, clock: Any) -> None:
    ids = seed(store)
    assert client.post(f"/api/v1/alerts/{ids[1]}/ack", json={"comment": "x"}).status_code == 403  # viewer
    clock.set(T0 + minutes(3))
    r = client.post(f"/api/v1/alerts/{ids[1]}/ack", json={"comment": "ครูตรวจรถแล้ว"}, headers=OPERATOR)
    assert r.status_code == 200
    body = r.json()
    assert body["ack_by"] == "somchai" and body["ack_comment"] == "ครูตรวจรถแล้ว" and body["ack_ns"] == T0 + minutes(3)
    assert client.post("/api/v1/alerts/unknown/ack", json={}, headers=OPERATOR).status_code == 404
    assert client.get(f"/api/v1/alerts/{ids[1]}").json()["ack_by"] == "somchai"


def test_silences_create_list_expire(client: TestClient, store: AlertStore, clock: Any) -> None:
    r = client.post(
        "/api/v1/silences",
        json={
            "matchers": ["city=chiangmai", "severity!=critical", "device_id=~g-.*"],
            "duration": "2h",
            "comment": "งานซ่อมสถานี",
        },
        headers=OPERATOR,
    )
    assert r.status_code == 201, r.text
    sil = r.json()
    assert sil["created_by"] == "somchai" and sil["active"] is True
    assert sil["ends_ns"] - sil["starts_ns"] == 2 * 3600 * 10**9
    assert [m["op"] for m in sil["matchers"]] == ["=", "!=", "=~"]
    assert len(client.get("/api/v1/silences", params={"active": "true"}).json()) == 1
    bad = client.post("/api/v1/silences", json={"matchers": ["colour=red"], "duration": "1h"}, headers=OPERATOR)
    assert bad.status_code == 422
    assert client.post("/api/v1/silences", json={"matchers": ["city=x"]}, headers=OPERATOR).status_code == 422
    assert client.post("/api/v1/silences", json={"matchers": ["city=x"], "duration": "1h"}).status_code == 403
    clock.advance(60)
    assert client.delete(f"/api/v1/silences/{sil['id']}", headers=OPERATOR).json()["active"] is False
    assert client.get("/api/v1/silences", params={"active": "true"}).json() == []
    assert len(client.get("/api/v1/silences").json()) == 1  # kept for the record
    assert client.delete("/api/v1/silences/nope", headers=OPERATOR).status_code == 404
    explicit = client.post(
        "/api/v1/silences",
        json={
            "matchers": [{"name": "rule", "op": "=", "value": "x"}],
            "starts_at": "2026-01-06T03:00:00Z",
            "ends_at": "2026-01-06T05:00:00Z",
        },
        headers=OPERATOR,
    )
    assert explicit.status_code == 201 and explicit.json()["created_by"] == "somchai"
    # the caller cannot choose who made it: the authenticated caller did
    forged = client.post(
        "/api/v1/silences",
        json={"matchers": ["rule=x"], "duration": "1h", "creator": "malee"},
        headers=OPERATOR,
    )
    assert forged.status_code == 422


def test_matchers() -> None:
    from rules.matchers import Matcher, matches_all

    labels = {"rule": "flood_level_high", "device_id": "g-12", "city": "chiangmai", "severity": "warning"}
    assert matches_all([Matcher.parse("device_id=~g-1.*"), Matcher.parse("severity!=critical")], labels)
    assert not matches_all([Matcher.parse("device_id=~g-1")], labels)  # anchored
    assert matches_all([Matcher.parse("city!~bang.*")], labels)
    assert not matches_all([], labels)  # an empty silence silences nothing
    with pytest.raises(ValueError):
        Matcher.parse("device_id=~[")


def test_router_accepts_the_gateway_require_role(store: AlertStore) -> None:
    from gateway.api import auth  # the gateway is part of nakhon: a failing import fails the test

    router = build_router(store, auth.require_role)
    assert {r.path for r in router.routes} >= {"/api/v1/alerts", "/api/v1/alerts/{alert_id}/ack", "/api/v1/silences"}
