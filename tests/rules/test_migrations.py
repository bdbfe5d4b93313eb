"""The rules tables come from the registry's Alembic history (0002_rules), identical to the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

import gateway.web.models  # noqa: F401 - and the console's staff tables (0003_staff_users)
import rules.store  # noqa: F401 - puts the rules tables on the shared metadata
from core.db import Base
from gateway.registry.models import Device
from gateway.registry.store import RegistryStore
from rules.store import RULES_TABLES, AlertStore, SchemaMissingError
from tests.gateway.pg import fresh_database
from tests.rules.conftest import T0

RULES_TABLE_NAMES = {t.name for t in RULES_TABLES}


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database brought to the head revision by `RegistryStore.migrate()`."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        registry = RegistryStore(url)
        registry.migrate()
        registry.close()
        yield url
        return
    with fresh_database(request.getfixturevalue("rules_pg_server")) as url:
        registry = RegistryStore(url)
        registry.migrate()
        registry.close()
        yield url


def _head() -> str:
    """The newest revision of the registry's history (one head: revisions form a line)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from core.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, heads
    return str(heads[0])


def test_migrations_match_the_models(migrated_url: str) -> None:
    """`alembic revision --autogenerate` would find nothing to do: registry and rules tables alike."""
    engine = create_engine(migrated_url)
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            assert names >= RULES_TABLE_NAMES
            assert Device.__tablename__ in names
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            diffs = compare_metadata(context, Base.metadata)
            assert diffs == []
            versions = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
            assert versions == _script_heads()  # at the newest revision(s), whichever branch added them
    finally:
        engine.dispose()


def _script_heads() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from core.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return set(ScriptDirectory.from_config(config).get_heads())


def test_metadata_holds_registry_and_rules_tables() -> None:
    assert set(Base.metadata.tables) >= RULES_TABLE_NAMES
    assert "devices" in Base.metadata.tables and "api_tokens" in Base.metadata.tables


def test_one_open_alert_constraint_comes_from_the_migration(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        uniques = inspect(engine).get_unique_constraints("rules_alerts")
        assert {"name": "uq_rules_alerts_open_key", "column_names": ["open_key"]} in [
            {"name": u["name"], "column_names": u["column_names"]} for u in uniques
        ]
    finally:
        engine.dispose()
    store = AlertStore(migrated_url)
    try:
        kw: dict[str, Any] = {"city": "c", "district": "d", "feed": "bus", "severity": "critical", "state": "firing"}
        ids = []
        for i in range(3):  # resolved alerts (open_key NULL) coexist; only one may be open
            alert, created = store.open_alert(rule="r", device_id="van", t_ns=T0 + 10 * i, **kw)
            again, created_again = store.open_alert(rule="r", device_id="van", t_ns=T0 + 10 * i + 1, **kw)
            assert created and not created_again and again.id == alert.id
            assert store.resolve(alert.id, T0 + 10 * i + 2) is not None
            ids.append(alert.id)
        assert len(set(ids)) == 3 and len(store.list_alerts(state="resolved")) == 3
    finally:
        store.close()


def test_alert_store_does_not_create_tables_on_a_migrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = RegistryStore(url)
    registry.migrate()
    registry.close()
    engine = create_engine(url)
    with engine.begin() as conn:  # a database left at 0001 (not migrated to the head)
        conn.execute(text("DROP TABLE rules_notifications"))
    engine.dispose()
    with pytest.raises(SchemaMissingError, match="rules_notifications"):
        AlertStore(url)


def test_alert_store_creates_only_its_tables_on_a_bare_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    AlertStore(url).close()
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) == RULES_TABLE_NAMES
    engine.dispose()


def test_migration_adopts_tables_an_older_alert_store_created(tmp_path: Path) -> None:
    """Before 0002, `AlertStore` made its tables itself in the registry database; migrating keeps their rows."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    store = AlertStore(url)  # bare database: create_all of the rules tables
    alert, _ = store.open_alert(
        rule="r", device_id="d", city="c", district="x", feed="air", severity="info", state="firing", t_ns=T0
    )
    store.close()
    registry = RegistryStore(url)
    registry.migrate()
    registry.close()
    store = AlertStore(url)
    assert store.get(alert.id) is not None
    store.close()


def test_downgrade_removes_only_the_rules_tables(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from core.db import MIGRATIONS_DIR

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = RegistryStore(url)
    registry.migrate()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with registry.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001_registry")
    names = set(inspect(registry.engine).get_table_names())
    assert not names & RULES_TABLE_NAMES and "devices" in names
    registry.migrate()  # and up again
    assert set(inspect(registry.engine).get_table_names()) >= RULES_TABLE_NAMES
    registry.close()
