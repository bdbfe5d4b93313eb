"""The `devices` and `tokens` typer apps, mounted as the app shell mounts them, with a context we supply."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import typer
from typer.testing import CliRunner

from gateway.broker import FakeProvisioner
from gateway.cli import devices_app, tokens_app
from gateway.registry import RegistryStore

shell = typer.Typer()
shell.add_typer(devices_app, name="devices")
shell.add_typer(tokens_app, name="tokens")


@pytest.fixture
def run(tmp_path: Path) -> Any:
    store = RegistryStore.for_data_dir(tmp_path / "data")
    broker = FakeProvisioner()
    runner = CliRunner()

    def invoke(*args: str, with_broker: bool = True) -> Any:
        obj = {"registry": lambda: store, "provisioner": (lambda: broker) if with_broker else None}
        return runner.invoke(shell, list(args), obj=obj)

    invoke.store = store  # type: ignore[attr-defined]
    invoke.broker = broker  # type: ignore[attr-defined]
    yield invoke
    store.close()


def test_add_show_list_rotate_retire(run: Any) -> None:
    added = run(
        "devices",
        "add",
        "cm-flood-1",
        "--feed",
        "flood",
        "--city",
        "chiangmai",
        "--district",
        "Mueang",
        "--site",
        "bank_level_m=3.7",
        "--lat",
        "18.79",
        "--lon",
        "98.99",
    )
    assert added.exit_code == 0, added.output
    password = next(line.split(": ", 1)[1] for line in added.output.splitlines() if line.startswith("MQTT password"))
    assert run.broker.clients["device.cm-flood-1"]["password"] == password
    assert "ระบบจะแสดงเพียงครั้งเดียว" in added.output
    shown = run("devices", "show", "cm-flood-1")
    assert shown.exit_code == 0 and "city/chiangmai/flood/cm-flood-1" in shown.output and password not in shown.output
    listed = run("devices", "list", "--feed", "flood")
    assert "cm-flood-1" in listed.output
    rotated = run("devices", "rotate-credentials", "cm-flood-1")
    assert rotated.exit_code == 0 and password not in rotated.output
    retired = run("devices", "retire", "cm-flood-1")
    assert retired.exit_code == 0 and "device.cm-flood-1" not in run.broker.clients
    assert run.store.devices.get("cm-flood-1").status == "retired"
    actors = {e.actor for e in run.store.audit.find().items}
    assert all(a.startswith("cli") for a in actors)


def test_add_without_broker_and_bad_input(run: Any) -> None:
    no_broker = run(
        "devices", "add", "air-1", "--feed", "air", "--city", "bangkok", "--district", "Bang Rak", with_broker=False
    )
    assert no_broker.exit_code == 0 and "no credentials issued" in no_broker.output
    assert run("devices", "rotate-credentials", "air-1", with_broker=False).exit_code == 1
    bad = run("devices", "add", "bad id", "--feed", "water", "--city", "x", "--district", "y", "--site", "foo")
    assert bad.exit_code == 2
    assert "device_id" in bad.output
    missing = run("devices", "show", "nope")
    assert missing.exit_code == 1 and "not registered" in missing.output and "ไม่พบอุปกรณ์" in missing.output


def test_import_keeps_good_rows_and_reports_bad_ones(run: Any, tmp_path: Path) -> None:
    csv_file = tmp_path / "devices.csv"
    csv_file.write_text(
        "device_id,feed,city,district,lat,lon,name\n"
        "ok-1,bus,phuket,Kathu,7.9,98.3,Van 1\n"
        "bad 2,bus,phuket,Kathu,7.9,98.3,Van 2\n"
        "ok-3,bus,phuket,Kathu,7.9,500,Van 3\n",
        encoding="utf-8",
    )
    dry = run("devices", "import", str(csv_file), "--dry-run")
    assert "would import: 1 created" in dry.output and not run.store.devices.exists("ok-1")
    result = run("devices", "import", str(csv_file))
    assert result.exit_code == 1
    assert "1 created" in result.output and "2 row(s) rejected" in result.output
    assert "line 3, field 'device_id'" in result.output and "line 4, field 'lon'" in result.output
    assert run.store.devices.exists("ok-1")


def test_maintenance(run: Any) -> None:
    run("devices", "add", "m-1", "--feed", "energy", "--city", "khonkaen", "--district", "Mueang")
    on = run("devices", "maintenance", "m-1", "--hours", "2")
    assert on.exit_code == 0 and "in maintenance until" in on.output
    # times shown to people are Asia/Bangkok (the echo said "(UTC)" with a UTC time)
    until = run.store.devices.get("m-1").maintenance_until
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    assert f"until {until.astimezone(ZoneInfo('Asia/Bangkok')):%Y-%m-%d %H:%M} (Asia/Bangkok)" in on.output
    assert "UTC" not in on.output
    assert run.store.devices.get("m-1").in_maintenance
    naive = run("devices", "maintenance", "m-1", "--until", "2030-01-01T00:00:00")
    assert naive.exit_code == 2 and "until" in naive.output
    aware = run("devices", "maintenance", "m-1", "--until", "2030-01-01T07:00:00+07:00")
    assert aware.exit_code == 0 and "until 2030-01-01 07:00 (Asia/Bangkok)" in aware.output
    off = run("devices", "maintenance", "m-1", "--end")
    assert off.exit_code == 0 and not run.store.devices.get("m-1").in_maintenance
    assert run("devices", "maintenance", "m-1").exit_code == 2


def test_tokens_create_list_revoke(run: Any) -> None:
    created = run("tokens", "create", "--role", "engineer", "--name", "field-team")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    assert token.startswith("nkh_") and run.store.tokens.authenticate(token).role == "engineer"
    listed = run("tokens", "list")
    assert "field-team\tengineer" in listed.output and token not in listed.output
    assert run("tokens", "create", "--role", "root", "--name", "x").exit_code == 2
    assert run("tokens", "create", "--role", "viewer", "--name", "field-team").exit_code == 1
    assert run("tokens", "revoke", "field-team").exit_code == 0
    assert run.store.tokens.authenticate(token) is None
    assert run("tokens", "revoke", "nobody").exit_code == 1


def test_tokens_create_with_expiry_and_cities(run: Any) -> None:
    created = run("tokens", "create", "--role", "operator", "--name", "cm-ops", "--city", "chiangmai",
                  "--city", "lamphun", "--expires-in-days", "30")
    assert created.exit_code == 0, created.output
    token = run.store.tokens.authenticate(created.stdout.strip().splitlines()[0])
    assert token.cities == ["chiangmai", "lamphun"] and token.expires_at is not None
    listed = run("tokens", "list").output
    assert "chiangmai,lamphun" in listed and "cm-ops" in listed
    assert run("tokens", "create", "--role", "viewer", "--name", "bad", "--city", "no/slash").exit_code == 2
    gone = run("tokens", "create", "--role", "viewer", "--name", "gone", "--expires-in-days", "-1")
    assert run.store.tokens.authenticate(gone.stdout.strip().splitlines()[0]) is None  # already expired


def test_city_name_is_kept_in_the_registry_and_audited(run: Any) -> None:
    out = run("devices", "city-name", "laem-chabang", "--th", "แหลมฉบัง", "--en", "Laem Chabang")
    assert out.exit_code == 0, out.output
    assert run.store.cities.all() == {"laem-chabang": ("แหลมฉบัง", "Laem Chabang")}
    run("devices", "city-name", "laem-chabang", "--th", "เทศบาลนครแหลมฉบัง", "--en", "Laem Chabang City")
    assert run.store.cities.all()["laem-chabang"] == ("เทศบาลนครแหลมฉบัง", "Laem Chabang City")
    assert run("devices", "city-name", "x").exit_code != 0  # a name is required
