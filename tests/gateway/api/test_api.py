"""The HTTP API with the in-process fake provisioner: devices, import, profiles, overrides, maintenance,
diagnostics, roles and tokens, audit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from gateway.api import Principal, create_app, require_role
from gateway.broker import FakeProvisioner
from gateway.registry import RecentMessage, RegistryStore
from gateway.secrets import verify_password

DEVICE = {
    "device_id": "cm-flood-1",
    "feed": "flood",
    "city": "chiangmai",
    "district": "Mueang",
    "name": "P.1",
    "lat": 18.79,
    "lon": 98.99,
    "site": {"bank_level_m": 3.7},
}


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str], store: RegistryStore, broker: FakeProvisioner):
        self.client = client
        self.tokens = tokens
        self.store = store
        self.broker = broker

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def call(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> Any:
        headers = {**self.as_(role), **kwargs.pop("headers", {})}
        return self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)


@pytest.fixture
def api(sqlite_store: RegistryStore, fake_provisioner: FakeProvisioner) -> Iterator[Api]:
    tokens = {
        role: sqlite_store.tokens.create(f"{role}-token", role, actor="test")[1]
        for role in ("admin", "engineer", "operator", "viewer")
    }
    extra = APIRouter(prefix="/api/v1/alerts")

    @extra.post("/{alert_id}/ack")
    def ack(alert_id: str, who: Principal = Depends(require_role("operator"))) -> dict[str, str]:  # noqa: B008
        return {"acked": alert_id, "by": who.name}

    app = create_app(sqlite_store, fake_provisioner, extra_routers=[extra])
    with TestClient(app) as client:
        yield Api(client, tokens, sqlite_store, fake_provisioner)


def test_healthz_and_docs(api: Api) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    assert api.client.get("/docs").status_code == 200
    assert "/api/v1/devices" in api.client.get("/openapi.json").json()["paths"]


def test_create_device_issues_credentials_once(api: Api) -> None:
    response = api.call("POST", "/devices", "engineer", json=DEVICE)
    assert response.status_code == 201, response.text
    body = response.json()
    password = body["mqtt"]["password"]
    assert body["mqtt"]["username"] == body["mqtt"]["client_id"] == "device.cm-flood-1"
    assert body["mqtt"]["topic"] == "city/chiangmai/flood/cm-flood-1"
    assert body["message_th"]
    assert api.broker.clients["device.cm-flood-1"]["topic"] == "city/chiangmai/flood/cm-flood-1"
    # Never again: not in GET, not in the audit log, only a hash in the database.
    shown = api.call("GET", "/devices/cm-flood-1", "viewer")
    assert password not in shown.text and shown.json()["has_mqtt_credentials"]
    assert password not in api.call("GET", "/audit", "engineer").text
    with api.store.engine.connect() as conn:
        from sqlalchemy import text

        stored = conn.execute(text("SELECT mqtt_password_hash FROM devices")).scalar_one()
    assert password not in stored and verify_password(password, stored)
    assert "***" in str(api.broker.calls[0])  # the fake records no password either
    assert api.call("POST", "/devices", "engineer", json=DEVICE).status_code == 409


def test_bad_device_input_names_each_field(api: Api) -> None:
    bad = dict(DEVICE, device_id="has space", lat=123, site={"bank_level_m": "x"}, colour="red")
    response = api.call("POST", "/devices", "engineer", json=bad)
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"device_id", "lat", "site", "colour"} <= fields
    assert response.json()["message_th"]


def test_auth_missing_invalid_and_forbidden(api: Api) -> None:
    missing = api.client.get("/api/v1/devices")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "missing bearer token" in missing.json()["message"]
    invalid = api.client.get("/api/v1/devices", headers={"Authorization": "Bearer nkh_nope"})
    assert invalid.status_code == 401 and invalid.headers["WWW-Authenticate"] == "Bearer"
    assert "invalid, revoked or expired" in invalid.json()["message"]
    forbidden = api.call("POST", "/devices", "viewer", json=DEVICE)
    assert forbidden.status_code == 403
    assert "requires role engineer (or admin)" in forbidden.json()["message"]
    assert api.call("POST", "/devices", "operator", json=DEVICE).status_code == 403
    assert api.call("GET", "/devices", "operator").status_code == 200
    assert api.call("GET", "/audit", "viewer").status_code == 403
    assert api.call("GET", "/tokens", "engineer").status_code == 403
    # Another router reuses require_role: operators (and admins) may ack, viewers may not.
    assert api.call("POST", "/alerts/a1/ack", "operator").json() == {"acked": "a1", "by": "operator-token"}
    assert api.call("POST", "/alerts/a1/ack", "admin").status_code == 200
    assert api.call("POST", "/alerts/a1/ack", "viewer").status_code == 403


def test_tokens_api_and_revocation(api: Api) -> None:
    created = api.call("POST", "/tokens", json={"name": "grafana", "role": "viewer"})
    assert created.status_code == 201
    secret = created.json()["secret"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert api.client.get("/api/v1/devices", headers=headers).status_code == 200
    assert secret not in api.call("GET", "/tokens").text
    assert api.call("DELETE", "/tokens/grafana").json()["revoked_at"]
    assert api.client.get("/api/v1/devices", headers=headers).status_code == 401


def test_list_filters_and_pagination(api: Api) -> None:
    for i in range(5):
        api.call("POST", "/devices", json=dict(DEVICE, device_id=f"d-{i}", district="A" if i < 3 else "B"))
    api.call("POST", "/devices", json=dict(DEVICE, device_id="air-1", feed="air", city="bangkok", site={}))
    page = api.call("GET", "/devices", "viewer", params={"city": "chiangmai", "limit": 2, "offset": 2}).json()
    assert page["total"] == 5 and [d["device_id"] for d in page["items"]] == ["d-2", "d-3"]
    assert api.call("GET", "/devices", params={"district": "B"}).json()["total"] == 2
    assert api.call("GET", "/devices", params={"feed": "air"}).json()["total"] == 1
    assert api.call("GET", "/devices", params={"feed": "water"}).status_code == 422
    assert api.call("GET", "/devices", params={"limit": 0}).status_code == 422


def test_patch_moves_the_broker_permission_and_retire_revokes(api: Api) -> None:
    api.call("POST", "/devices", json=DEVICE)
    moved = api.call("PATCH", "/devices/cm-flood-1", "engineer", json={"city": "lamphun", "name": "moved"})
    assert moved.status_code == 200 and moved.json()["topic"] == "city/lamphun/flood/cm-flood-1"
    assert api.broker.clients["device.cm-flood-1"]["topic"] == "city/lamphun/flood/cm-flood-1"
    assert api.call("PATCH", "/devices/cm-flood-1", json={"unknown": 1}).status_code == 422
    assert api.call("PATCH", "/devices/missing", json={"name": "x"}).status_code == 404
    retired = api.call("DELETE", "/devices/cm-flood-1", "engineer")
    assert retired.json()["status"] == "retired"
    assert "device.cm-flood-1" not in api.broker.clients
    assert api.call("POST", "/devices/cm-flood-1/rotate-credentials").status_code == 409
    assert api.call("GET", "/devices", params={"status": "retired"}).json()["total"] == 1


def test_rotate_credentials(api: Api) -> None:
    first = api.call("POST", "/devices", json=DEVICE).json()["mqtt"]["password"]
    rotated = api.call("POST", "/devices/cm-flood-1/rotate-credentials", "engineer")
    assert rotated.status_code == 200
    second = rotated.json()["password"]
    assert second != first and api.broker.clients["device.cm-flood-1"]["password"] == second


def test_broker_failure_leaves_no_half_registered_device(api: Api) -> None:
    from gateway.broker import DynsecTimeoutError

    api.broker.fail_with = DynsecTimeoutError("the broker did not answer")
    response = api.call("POST", "/devices", json=DEVICE)
    assert response.status_code == 502 and response.json()["error"] == "broker_timeout"
    api.broker.fail_with = None
    assert api.call("GET", "/devices/cm-flood-1").status_code == 404


def test_csv_import_text_multipart_dry_run_and_atomic(api: Api) -> None:
    csv_text = "device_id,feed,city,district,lat,lon,name\ne-1,energy,khonkaen,Mueang,16.4,102.8,Meter 1\n"
    dry = api.call(
        "POST",
        "/devices/import",
        "engineer",
        params={"dry_run": "true"},
        content=csv_text,
        headers={"Content-Type": "text/csv"},
    )
    assert dry.status_code == 200 and dry.json()["created"] == 1 and not dry.json()["applied"]
    assert api.call("GET", "/devices/e-1").status_code == 404
    real = api.client.post(
        "/api/v1/devices/import", files={"file": ("devices.csv", csv_text, "text/csv")}, headers=api.as_("engineer")
    )
    assert real.status_code == 200 and real.json()["applied"], real.text
    assert api.call("GET", "/devices/e-1").status_code == 200
    bad = csv_text + "e-2,energy,khonkaen,Mueang,16.4,102.8,ok\ne 3,energy,khonkaen,Mueang,16.4,999,bad\n"
    refused = api.client.post(
        "/api/v1/devices/import", content=bad, headers={**api.as_("engineer"), "Content-Type": "text/csv"}
    )
    assert refused.status_code == 422
    body = refused.json()
    assert not body["applied"] and {(e["row"], e["field"]) for e in body["errors"]} == {(4, "device_id"), (4, "lon")}
    assert api.call("GET", "/devices/e-2").status_code == 404  # a malformed file changes nothing
    assert (
        api.client.post(
            "/api/v1/devices/import", content=b"\xff\xfe", headers={**api.as_("engineer"), "Content-Type": "text/csv"}
        ).status_code
        == 422
    )
    assert api.client.post("/api/v1/devices/import", json={"a": 1}, headers=api.as_("engineer")).status_code == 415


def test_profiles_overrides_maintenance_diagnostics(api: Api) -> None:
    profile = {
        "name": "pm-sensor",
        "feed": "air",
        "expected_fields": ["pm25_ugm3"],
        "default_thresholds": {"pm25_warning": 37.5},
        "heartbeat_s": 600,
    }
    assert api.call("POST", "/profiles", "engineer", json=profile).status_code == 201
    assert api.call("POST", "/profiles", json=profile).status_code == 409
    bad = api.call("POST", "/profiles", json=dict(profile, name="p2", expected_fields=["level_m"]))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "expected_fields"
    assert api.call("PATCH", "/profiles/pm-sensor", json={"heartbeat_s": 900}).json()["heartbeat_s"] == 900
    assert [p["name"] for p in api.call("GET", "/profiles", "viewer").json()] == ["pm-sensor"]
    air = dict(DEVICE, device_id="air-1", feed="air", site={}, profile="pm-sensor")
    assert api.call("POST", "/devices", json=air).status_code == 201
    assert api.call("DELETE", "/profiles/pm-sensor").status_code == 409

    overrides = {"thresholds": {"pm25_warning": 50}, "calibration": {"pm25_ugm3": {"offset": -2, "scale": 0.95}}}
    assert api.call("PUT", "/devices/air-1/overrides", "engineer", json=overrides).status_code == 200
    assert api.call("GET", "/devices/air-1/overrides", "viewer").json()["calibration"]["pm25_ugm3"]["scale"] == 0.95
    wrong = api.call("PUT", "/devices/air-1/overrides", json={"calibration": {"level_m": {"offset": 1}}})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "calibration.level_m"

    until = (datetime.now(UTC) + timedelta(hours=3)).astimezone().isoformat()
    on = api.call("POST", "/devices/air-1/maintenance", "engineer", json={"until": until})
    assert on.status_code == 200 and on.json()["in_maintenance"]
    assert on.json()["maintenance_until"].endswith("Z") or on.json()["maintenance_until"].endswith("+00:00")
    naive = api.call("POST", "/devices/air-1/maintenance", json={"until": "2030-01-01T00:00:00"})
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "until"
    off = api.call("POST", "/devices/air-1/maintenance", json={"until": None})
    assert not off.json()["in_maintenance"]

    api.store.recent.record(
        {
            "air-1": [
                RecentMessage("city/chiangmai/air/air-1", b'{"pm25_ugm3": 41.0}', True),
                RecentMessage(
                    "city/chiangmai/air/air-1", b'{"pm25_ugm3": "x"}', False, "schema: pm25_ugm3 not a number"
                ),
            ]
        }
    )
    diagnostics = api.call("GET", "/devices/air-1/diagnostics", "viewer").json()
    assert diagnostics["last_reading"] == {"pm25_ugm3": 41.0}
    assert len(diagnostics["recent_messages"]) == 2
    assert diagnostics["recent_messages"][0]["reason"] == "schema: pm25_ugm3 not a number"
    assert api.call("GET", "/devices/nope/diagnostics").status_code == 404


def test_a_profile_is_the_settings_of_a_loaded_mapping_profile(api: Api) -> None:
    unknown = api.call("POST", "/profiles", "engineer", json={"name": "no-such-mapping", "feed": "air"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "name"
    other_feed = api.call("POST", "/profiles", "engineer", json={"name": "air-generic-lora", "feed": "flood"})
    assert other_feed.status_code == 422 and other_feed.json()["errors"][0]["field"] == "feed"
    mapping = api.call("POST", "/profiles", json={"name": "air-generic-lora", "feed": "air", "field_mapping": "x"})
    assert mapping.status_code == 422  # gone: the mapping is the profile's name
    created = api.call("POST", "/profiles", "engineer", json={"name": "air-generic-lora", "feed": "air"})
    assert created.status_code == 201 and "field_mapping" not in created.json()
    assert [p["name"] for p in api.call("GET", "/profiles", "viewer").json()] == ["air-generic-lora"]


def test_audit_log_records_actor_and_filters(api: Api) -> None:
    api.call("POST", "/devices", "engineer", json=DEVICE)
    api.call("PATCH", "/devices/cm-flood-1", "engineer", json={"name": "renamed"})
    audit = api.call("GET", "/audit", "engineer", params={"entity_id": "cm-flood-1"}).json()
    assert audit["total"] == 2
    latest = audit["items"][0]
    assert latest["action"] == "device.update" and latest["actor"] == "token:engineer-token"
    assert latest["before"]["name"] == "P.1" and latest["after"]["name"] == "renamed"
    assert latest["at"].endswith("Z") or latest["at"].endswith("+00:00")
    created = audit["items"][1]
    assert created["after"]["mqtt_password_hash"] == "***redacted***"
    since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert api.call("GET", "/audit", params={"since": since}).json()["total"] == 0
    assert api.call("GET", "/audit", params={"since": "2026-01-01T00:00:00"}).status_code == 422
    assert api.call("GET", "/audit", params={"action": "device.create", "limit": 1}).json()["total"] == 1


def test_import_moving_devices_while_the_broker_refuses_reports_per_row_and_keeps_them_consistent(api: Api) -> None:
    from gateway.broker import DynsecTimeoutError

    assert api.call("POST", "/devices", "engineer", json=DEVICE).status_code == 201
    api.broker.fail_with = DynsecTimeoutError("the broker did not answer")
    moved = "device_id,feed,city,district,lat,lon,name\ncm-flood-1,flood,lamphun,Mueang,18.5,99.0,P.1\n"
    response = api.call("POST", "/devices/import", "engineer", content=moved, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    [row] = response.json()["broker_errors"]
    assert row["device_id"] == "cm-flood-1" and row["kept_topic"] == "city/chiangmai/flood/cm-flood-1"
    # the registry still says where the broker lets the device publish
    assert api.store.devices.get("cm-flood-1").city == "chiangmai"
    assert api.broker.clients["device.cm-flood-1"]["topic"] == "city/chiangmai/flood/cm-flood-1"
