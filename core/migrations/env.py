"""Alembic environment: run by `RegistryStore.migrate()` with a connection in `config.attributes`,
or by the `alembic` command with `sqlalchemy.url` set (used to generate new revisions).

The migrations import no component: the revisions spell out their tables, and upgrading needs nothing else.
Comparing with the models (autogenerate) needs the models' tables on `core.db.Base.metadata`: a caller that
has imported them passes nothing; the `alembic` command names them, e.g.
`alembic -x models=gateway.registry.models,gateway.web.models,rules.store revision --autogenerate -m ...`.
"""

from __future__ import annotations

import importlib

from alembic import context
from sqlalchemy import engine_from_config, pool

from core.db import Base

config = context.config
for _module in filter(None, context.get_x_argument(as_dictionary=True).get("models", "").split(",")):
    importlib.import_module(_module.strip())  # puts that component's tables on Base.metadata
target_metadata = config.attributes.get("target_metadata", Base.metadata)


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
