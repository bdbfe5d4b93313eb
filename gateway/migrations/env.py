"""Alembic environment: run by `RegistryStore.migrate()` with a connection in `config.attributes`,
or by the `alembic` command with `sqlalchemy.url` set (used to generate new revisions)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

import gateway.registry.models  # noqa: F401 - registers the registry tables on Base.metadata
from gateway.db import Base

# The rules engine keeps its alert tables on the same Base; they join the metadata when it is installed.
try:
    import rules.store  # type: ignore[import-not-found]  # noqa: F401
except ImportError as exc:
    if exc.name not in ("rules", "rules.store"):  # rules.store exists but is broken: say so, don't hide it
        raise

target_metadata = Base.metadata
config = context.config


def run_migrations(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: batch mode rebuilds the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = engine_from_config(
        config.get_section(config.config_ini_section) or {}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.begin() as new_connection:
        run_migrations(new_connection)
