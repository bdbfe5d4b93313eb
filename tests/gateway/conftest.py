from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.broker import FakeProvisioner
from gateway.registry import RegistryStore
from tests.gateway.brokerkit import broker, gateway  # noqa: F401 - fixtures on a real dynsec Mosquitto
from tests.gateway.loaded_profiles import MAPPING_PROFILES
from tests.gateway.pg import fresh_database, postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
    """A migrated, empty registry on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        registry = RegistryStore.for_data_dir(tmp_path, mapping_profiles=MAPPING_PROFILES)
        registry.migrate()
        yield registry
        registry.close()
        return
    server = request.getfixturevalue("postgres_url")
    with fresh_database(server) as url:
        registry = RegistryStore(url, mapping_profiles=MAPPING_PROFILES)
        registry.migrate()
        yield registry
        registry.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[RegistryStore]:
    registry = RegistryStore.for_data_dir(tmp_path, mapping_profiles=MAPPING_PROFILES)
    registry.migrate()
    yield registry
    registry.close()


@pytest.fixture
def fake_provisioner() -> FakeProvisioner:
    return FakeProvisioner()
