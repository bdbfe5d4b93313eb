"""The registry store on SQLite and PostgreSQL (migrations included): devices, profiles, overrides, import,
recent messages, tokens, audit, and the collectors' in-memory directory."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect

from gateway.errors import ConflictError, DeviceNotFoundError, InvalidInputError
from gateway.registry import RecentMessage, RegistryDirectory, RegistryStore, parse_device_csv
from gateway.registry.schemas import DevicePatch, DeviceSpec, OverridesSpec, ProfilePatch, ProfileSpec
from gateway.secrets import REDACTED

HEADER = "device_id,feed,city,district,lat,lon,name"


def flood(device_id: str = "cm-flood-1", **extra: object) -> DeviceSpec:
    data: dict[str, object] = {
        "device_id": device_id,
        "feed": "flood",
        "city": "chiangmai",
        "district": "Mueang",
        "name": "P.1 Nawarat bridge",
        "lat": 18.79,
        "lon": 98.99,
        "site": {"bank_level_m": 3.7, "ground_level_m": 0.0},
    }
    data.update(extra)
    return DeviceSpec.model_validate(data)


def test_migrations_create_every_table_and_are_idempotent(store: RegistryStore) -> None:
    store.migrate()  # a second run is a no-op
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "devices",
        "device_profiles",
        "device_overrides",
        "api_tokens",
        "audit_log",
        "device_recent_messages",
        "alembic_version",
    } <= tables


def test_create_get_list_with_filters_and_paging(store: RegistryStore) -> None:
    store.devices.create(flood("a-1"), actor="t")
    store.devices.create(flood("a-2", district="Hang Dong"), actor="t")
    store.devices.create(flood("b-1", feed="air", city="bangkok", district="Bang Rak", site={}), actor="t")
    device = store.devices.get("a-1")
    assert device.topic == "city/chiangmai/flood/a-1"
    assert device.created_at.tzinfo is not None and device.created_at.utcoffset() == timedelta(0)
    assert store.devices.find(city="chiangmai").total == 2
    assert [d.device_id for d in store.devices.find(district="Hang Dong").items] == ["a-2"]
    assert store.devices.find(feed="air").total == 1
    page = store.devices.find(limit=2, offset=1)
    assert page.total == 3 and [d.device_id for d in page.items] == ["a-2", "b-1"]
    with pytest.raises(DeviceNotFoundError):
        store.devices.get("nope")


def test_duplicates_and_dev_eui_uniqueness(store: RegistryStore) -> None:
    store.devices.create(flood("a-1", dev_eui="70B3D57ED0001234"), actor="t")
    assert store.devices.get("a-1").dev_eui == "70b3d57ed0001234"  # stored lower-case
    with pytest.raises(ConflictError):
        store.devices.create(flood("a-1"), actor="t")
    with pytest.raises(ConflictError) as excinfo:
        store.devices.create(flood("a-2", dev_eui="70b3d57ed0001234"), actor="t")
    assert excinfo.value.context["field"] == "dev_eui"


def test_bad_input_names_the_field() -> None:
    with pytest.raises(Exception) as excinfo:
        flood("bad id/with slash", site={"bank_level_m": "high"})
    text = str(excinfo.value)
    assert "device_id" in text and "site" in text
    with pytest.raises(Exception, match="unknown site field 'colour'"):
        flood(site={"colour": 1})
    with pytest.raises(Exception, match="dev_eui"):
        flood(dev_eui="xyz")


def test_update_retire_maintenance_and_audit(store: RegistryStore) -> None:
    store.devices.create(flood(), actor="token:eng")
    before, after = store.devices.update(
        "cm-flood-1", DevicePatch(name="New name", site={"bank_level_m": 4.0}), actor="token:eng"
    )
    assert before.name == "P.1 Nawarat bridge" and after.name == "New name"
    assert after.site == {"bank_level_m": 4.0}
    with pytest.raises(InvalidInputError) as excinfo:
        store.devices.update("cm-flood-1", DevicePatch.model_validate({"city": None}), actor="t")
    assert excinfo.value.problems[0].field == "city"
    until = datetime.now(UTC) + timedelta(hours=2)
    device = store.devices.set_maintenance("cm-flood-1", until, actor="t")
    assert device.in_maintenance
    device = store.devices.set_maintenance("cm-flood-1", datetime.now(UTC) - timedelta(seconds=1), actor="t")
    assert not device.in_maintenance  # maintenance ends by itself: active iff until > now
    store.devices.set_credentials(
        "cm-flood-1", mqtt_username="cm-flood-1", mqtt_password_hash="scrypt$secret", actor="t"
    )
    retired = store.devices.retire("cm-flood-1", actor="t")
    assert retired.status == "retired" and not retired.has_mqtt_credentials
    audit = store.audit.find(entity_id="cm-flood-1", limit=50)
    actions = [entry.action for entry in audit.items]
    assert actions[0] == "device.retire" and actions[-1] == "device.create"
    assert "device.update" in actions and "device.rotate_credentials" in actions
    rotate = next(e for e in audit.items if e.action == "device.rotate_credentials")
    assert rotate.after is not None and rotate.after["mqtt_password_hash"] == REDACTED
    assert "scrypt$secret" not in str([e.model_dump() for e in audit.items])
    assert audit.items[-1].actor == "token:eng"
    assert all(e.at.utcoffset() == timedelta(0) for e in audit.items)


def test_profiles_overrides_and_directory_merge(store: RegistryStore) -> None:
    store.profiles.create(
        ProfileSpec(
            name="ultrasonic-v1",
            feed="flood",
            expected_fields=["level_m", "battery_pct"],
            default_thresholds={"level_warning_m": 3.0, "level_critical_m": 3.7},
            heartbeat_s=300,
        ),
        actor="t",
    )
    with pytest.raises(InvalidInputError) as excinfo:
        store.devices.create(flood(feed="air", profile="ultrasonic-v1", site={}), actor="t")
    assert excinfo.value.problems[0].field == "profile"
    store.devices.create(flood(profile="ultrasonic-v1", dev_eui="0011223344556677"), actor="t")
    store.overrides.set(
        "cm-flood-1",
        OverridesSpec.model_validate(
            {"thresholds": {"level_critical_m": 3.9}, "calibration": {"level_m": {"offset": -0.12, "scale": 1.0}}}
        ),
        actor="t",
    )
    with pytest.raises(InvalidInputError) as excinfo:
        store.overrides.set("cm-flood-1", OverridesSpec.model_validate({"calibration": {"pm25_ugm3": {}}}), actor="t")
    assert excinfo.value.problems[0].field == "calibration.pm25_ugm3"
    with pytest.raises(ConflictError):
        store.profiles.delete("ultrasonic-v1", actor="t")
    store.profiles.update("ultrasonic-v1", ProfilePatch(heartbeat_s=600), actor="t")
    with pytest.raises(InvalidInputError):
        store.profiles.update("ultrasonic-v1", ProfilePatch(expected_fields=["pm25_ugm3"]), actor="t")

    until = datetime(2030, 1, 1, 7, 0, tzinfo=UTC)
    store.devices.set_maintenance("cm-flood-1", until, actor="t")
    directory = RegistryDirectory(store, refresh_s=60, start=False)
    info = directory.by_id("cm-flood-1")
    assert info is not None
    assert info.thresholds == {"level_warning_m": 3.0, "level_critical_m": 3.9}
    assert info.calibration == {"level_m": {"offset": -0.12, "scale": 1.0}}
    assert info.heartbeat_s == 600
    assert info.site == {"bank_level_m": 3.7, "ground_level_m": 0.0}
    assert info.maintenance_until_ns == int(until.timestamp()) * 1_000_000_000
    assert directory.by_dev_eui("0011223344556677") is info
    assert directory.by_dev_eui("0011223344556677".upper()) is info
    directory.stop()


def test_directory_finds_a_device_registered_by_another_process_soon_after_a_miss(store: RegistryStore) -> None:
    directory = RegistryDirectory(store, refresh_s=60)  # the periodic poll cannot explain what follows
    try:
        other = RegistryStore(store.url)  # another process's store on the same database
        other.devices.create(flood("elsewhere-1"), actor="t")
        other.close()
        assert directory.by_id("elsewhere-1") is None  # the miss asks the background thread to check now
        deadline = time.monotonic() + 5
        while directory.by_id("elsewhere-1") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert directory.by_id("elsewhere-1") is not None
    finally:
        directory.stop()


def test_directory_refreshes_on_change_without_queries_per_lookup(store: RegistryStore) -> None:
    directory = RegistryDirectory(store, refresh_s=0.2)
    try:
        assert directory.by_id("new-1") is None
        store.devices.create(flood("new-1"), actor="t")
        # in-process changes reload the copy before the call returns: no window in which the device is unknown
        assert directory.by_id("new-1") is not None

        # A change made by another process (another store on the same database) is found by the poll.
        other = RegistryStore(store.url)
        other.devices.update("new-1", DevicePatch(name="renamed"), actor="t")
        other.close()
        deadline = time.monotonic() + 5
        while directory.by_id("new-1").name != "renamed" and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.02)
        assert directory.by_id("new-1").name == "renamed"  # type: ignore[union-attr]

        queries = []

        def count(*_args: object) -> None:
            queries.append(1)

        from sqlalchemy import event

        event.listen(store.engine, "before_cursor_execute", count)
        try:
            for _ in range(10_000):
                directory.by_id("new-1")
                directory.by_dev_eui("0000000000000000")
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
        assert len(queries) <= 4  # at most a background poll or two, never one per lookup
    finally:
        directory.stop()


def test_csv_import_upserts_idempotently(store: RegistryStore) -> None:
    csv_text = "\n".join(
        [
            HEADER + ",profile,dev_eui,site_bank_level_m,site_ground_level_m",
            "f-1,flood,chiangmai,Mueang,18.79,98.99,Gauge one,,70B3D57ED0000001,3.7,0.5",
            'f-2,flood,chiangmai,"Mueang, north",18.80,98.98,"Gauge ""two""",,,4.1,',
            "a-1,air,bangkok,ปทุมวัน,13.74,100.53,สถานีวัดฝุ่น,,,,",
        ]
    )
    report = store.imports.apply(parse_device_csv(csv_text), actor="t", atomic=True)
    assert (report.created, report.updated, report.unchanged, report.rejected) == (3, 0, 0, 0)
    assert store.devices.get("f-2").district == "Mueang, north"
    assert store.devices.get("f-2").site == {"bank_level_m": 4.1}
    assert store.devices.get("a-1").district == "ปทุมวัน"
    assert store.devices.get("f-1").dev_eui == "70b3d57ed0000001"
    again = store.imports.apply(parse_device_csv(csv_text), actor="t", atomic=True)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    changed = csv_text.replace("Gauge one", "Gauge 1")
    third = store.imports.apply(parse_device_csv(changed), actor="t", atomic=True)
    assert (third.created, third.updated, third.unchanged) == (0, 1, 2)
    assert store.audit.find(action="device.import_update").total == 1


def test_csv_import_reports_every_bad_row_and_field(store: RegistryStore) -> None:
    store.devices.create(flood("owner", dev_eui="00000000000000aa"), actor="t")
    csv_text = "\n".join(
        [
            HEADER + ",dev_eui,profile,site_bank_level_m",
            "good-1,flood,chiangmai,Mueang,18.7,98.9,ok,,,3",
            "bad id,flood,chiangmai,Mueang,18.7,98.9,x,,,3",  # line 3
            "bad-2,water,chiangmai,Mueang,91,98.9,x,,,",  # line 4: feed and lat
            "bad-3,flood,chiangmai,Mueang,18.7,98.9,x,00000000000000AA,,",  # line 5: DevEUI taken
            "bad-4,flood,chiangmai,Mueang,18.7,98.9,x,,no-such-profile,",  # line 6
            "bad-5,flood,chiangmai,Mueang,18.7,98.9,x,,,very high",  # line 7
            "good-1,flood,chiangmai,Mueang,18.7,98.9,dup,,,",  # line 8: duplicate of line 2
            "short,row",  # line 9
        ]
    )
    atomic = store.imports.apply(parse_device_csv(csv_text), actor="t", atomic=True)
    assert not atomic.applied and not store.devices.exists("good-1")  # a bad file changes nothing
    found = {(e["row"], e["field"]) for e in atomic.errors}
    assert {
        (3, "device_id"),
        (4, "feed"),
        (4, "lat"),
        (5, "dev_eui"),
        (6, "profile"),
        (7, "site_bank_level_m"),
        (8, "device_id"),
        (9, "row"),
    } <= found
    assert atomic.rejected == 7
    partial = store.imports.apply(parse_device_csv(csv_text), actor="t", atomic=False)
    assert partial.applied and partial.created == 1 and store.devices.exists("good-1")


def test_csv_header_problems_are_on_line_1() -> None:
    parsed = parse_device_csv("device_id,feed,city,lat,lon,name,colour\n")
    assert {(p.row, p.field) for p in parsed.problems} == {(1, "district"), (1, "colour")}
    assert parse_device_csv("").problems[0].row == 1


def test_csv_dry_run_changes_nothing(store: RegistryStore) -> None:
    report = store.imports.apply(
        parse_device_csv(HEADER + "\nx-1,bus,phuket,Kathu,7.9,98.3,Van 1\n"), actor="t", atomic=True, dry_run=True
    )
    assert report.created == 1 and not report.applied
    assert not store.devices.exists("x-1")
    assert store.audit.find().total == 0


def test_import_of_10000_rows_creates_all_then_updates_only_the_changed_row(store: RegistryStore) -> None:
    # No timing assertion: import speed is a performance target, never asserted in tests.
    lines = [HEADER + ",dev_eui,site_bank_level_m"]
    lines += [f"dev-{i:05d},flood,chiangmai,Mueang,18.7,98.9,Gauge {i},{i:016x},3.5" for i in range(10_000)]
    text = "\n".join(lines)
    report = store.imports.apply(parse_device_csv(text), actor="t", atomic=True)
    assert report.created == 10_000 and report.applied
    assert store.devices.find(limit=1).total == 10_000
    again = store.imports.apply(parse_device_csv(text.replace("Gauge 7,", "Gauge seven,")), actor="t", atomic=True)
    assert (again.created, again.updated, again.unchanged) == (0, 1, 9_999)
    assert store.devices.get("dev-00007").name == "Gauge seven"
    assert store.devices.get("dev-00070").name == "Gauge 70"  # "Gauge 7," matched only the one row


def test_recent_messages_keep_the_last_20(store: RegistryStore) -> None:
    store.devices.create(flood(), actor="t")
    base = time.time_ns()
    first = {
        "cm-flood-1": [
            RecentMessage("city/chiangmai/flood/cm-flood-1", b'{"level_m": %d}' % i, True, None, base + i)
            for i in range(15)
        ]
    }
    store.recent.record(first)
    second = {
        "cm-flood-1": [
            RecentMessage("city/chiangmai/flood/cm-flood-1", b"x" * 5000, False, "schema: level_m", base + 100 + i)
            for i in range(10)
        ],
        "unknown-dev": [RecentMessage("city/x/air/unknown-dev", "{}", False, "unknown_device", base)],
    }
    store.recent.record(second)
    kept = store.recent.of("cm-flood-1")
    assert len(kept) == 20
    assert kept[0].received_at.utcoffset() == timedelta(0)
    assert len(kept[0].payload.encode()) == 2048 and not kept[0].accepted and kept[0].reason == "schema: level_m"
    diagnostics = store.recent.diagnostics("cm-flood-1")
    assert diagnostics.last_reading == {"level_m": 14}
    assert diagnostics.last_seen == kept[0].received_at
    assert len(store.recent.of("unknown-dev")) == 1


def test_tokens_are_hashed_and_revocable(store: RegistryStore) -> None:
    record, token = store.tokens.create("ops-laptop", "operator", actor="cli")
    assert token.startswith("nkh_") and len(token) > 40
    authenticated = store.tokens.authenticate(token)
    assert authenticated is not None and authenticated.role == "operator"
    assert store.tokens.authenticate(token + "x") is None
    with store.engine.connect() as conn:
        from sqlalchemy import text

        stored = conn.execute(text("SELECT token_hash FROM api_tokens")).scalar_one()
    assert token not in stored
    with pytest.raises(ConflictError):
        store.tokens.create("ops-laptop", "viewer", actor="cli")
    store.tokens.revoke("ops-laptop", actor="cli")
    assert store.tokens.authenticate(token) is None
    assert record.name == "ops-laptop"
