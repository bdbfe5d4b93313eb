"""The registry's own revisions on SQLite and PostgreSQL: 0004 drops `device_profiles.field_mapping` without
losing a profile or a device, refuses when that would change which mapping a profile's devices get, and goes back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from core.db import MIGRATIONS_DIR
from gateway.registry.store import RegistryStore
from tests.gateway.pg import fresh_database

BEFORE = "0003_city_names"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no revision applied)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as fresh:
        yield fresh


def _to(store: RegistryStore, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    config.set_main_option("path_separator", "space")
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def _profiles_and_devices(store: RegistryStore, field_mapping: str) -> None:
    with store.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO device_profiles (name, feed, description, expected_fields, field_mapping, "
            "default_thresholds, heartbeat_s, created_at, updated_at) VALUES ('flood-ultrasonic-mm', 'flood', '', "
            "'[]', :mapping, '{\"level_warning_m\": 3.0}', 600, '2026-12-01 00:00:00', '2026-12-01 00:00:00')"
        ), {"mapping": field_mapping})
        connection.execute(text(
            "INSERT INTO devices (device_id, feed, city, district, name, profile, site, status, created_at, "
            "updated_at) VALUES ('gauge-1', 'flood', 'chiangmai', 'Mueang', '', 'flood-ultrasonic-mm', '{}', "
            "'active', '2026-12-01 00:00:00', '2026-12-01 00:00:00')"
        ))


def _columns(store: RegistryStore) -> set[str]:
    return {c["name"] for c in inspect(store.engine).get_columns("device_profiles")}


def test_field_mapping_goes_and_every_profile_and_device_stays(url: str) -> None:
    store = RegistryStore(url)
    try:
        _to(store, BEFORE)
        _profiles_and_devices(store, "flood-ultrasonic-mm")  # what the start-up sync wrote: the profile's name
        store.migrate()
        assert "field_mapping" not in _columns(store)
        [info] = store.view.device_infos()
        assert info.profile == info.mapping == "flood-ultrasonic-mm"
        assert info.thresholds == {"level_warning_m": 3.0} and info.heartbeat_s == 600
        _to(store, BEFORE, down=True)
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT field_mapping FROM device_profiles")).scalar_one() == (
                "flood-ultrasonic-mm"
            )
            assert connection.execute(text("SELECT profile FROM devices")).scalar_one() == "flood-ultrasonic-mm"
    finally:
        store.close()


def test_a_profile_applying_another_mapping_stops_the_upgrade_unchanged(url: str) -> None:
    store = RegistryStore(url)
    try:
        _to(store, BEFORE)
        _profiles_and_devices(store, "air-generic-lora")
        with pytest.raises(Exception, match="'flood-ultrasonic-mm' \\(mapping 'air-generic-lora'\\)"):
            store.migrate()
        assert "field_mapping" in _columns(store)
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == BEFORE
    finally:
        store.close()


def test_a_database_without_profiles_upgrades(url: str) -> None:
    store = RegistryStore(url)
    try:
        store.migrate()
        assert "field_mapping" not in _columns(store)
    finally:
        store.close()
