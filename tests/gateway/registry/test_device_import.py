"""CSV import into the registry: upserts in one transaction, every bad row named, dry runs."""

from __future__ import annotations

from gateway.registry import RegistryStore, parse_device_csv
from tests.gateway.registry.specs import HEADER, flood


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
