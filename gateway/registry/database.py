"""`RegistryDatabase`: the registry's one engine, its sessions and transactions, migrations and change listeners.

Every aggregate store (devices, profiles, tokens, ...) is built on the same `RegistryDatabase`, so a change that
spans aggregates (a device and its audit entry) is one transaction: the aggregates' `*_in(session, ...)` functions
take the caller's session instead of opening their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from core.db import MIGRATIONS_DIR
from gateway.secrets import redact

log = logging.getLogger(__name__)

CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def snapshot(obj: Any, columns: Iterable[str]) -> dict[str, Any]:
    """A JSON-ready, secret-free copy of an ORM row for the audit log."""
    return redact({c: iso(getattr(obj, c)) for c in columns})


def equal_to(model: Any, **values: Any) -> list[Any]:
    """`column == value` for each filter given (None means: not filtered)."""
    return [getattr(model, name) == value for name, value in values.items() if value is not None]


class RegistryDatabase:
    """One sync SQLAlchemy engine from a URL: SQLite (`sqlite:///{data_dir}/registry.db`) or PostgreSQL
    (`postgresql+psycopg://...`)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False}
            if url in ("sqlite://", "sqlite:///:memory:"):
                kwargs["poolclass"] = StaticPool  # one shared in-memory database, not one per connection
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        database = self.engine.url.database
        if url.startswith("sqlite") and database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)  # a first run on a new data dir just works
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def migrate(self, *, extra_version_locations: Sequence[str] = ()) -> None:
        """Bring the schema to the newest revision (Alembic `upgrade heads`), on SQLite or PostgreSQL."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        locations = [str(MIGRATIONS_DIR / "versions"), *extra_version_locations]
        config.set_main_option("version_locations", " ".join(locations))
        config.set_main_option("path_separator", "space")
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # ------------------------------------------------------------------ sessions

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in a transaction: committed when the block ends, rolled back if it raises."""
        with self.sessions() as session, session.begin():
            yield session

    # ------------------------------------------------------------------ change listeners

    def add_change_listener(self, callback: Callable[[], None]) -> None:
        """`callback()` runs after every committed change to devices, profiles or overrides (in-process)."""
        with self._listeners_lock:
            self._listeners.append(callback)

    def remove_change_listener(self, callback: Callable[[], None]) -> None:
        with self._listeners_lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def changed(self) -> None:
        """Tell the listeners (after the commit): what the collectors see has changed."""
        with self._listeners_lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback()
            except Exception:  # a listener's bug must not undo a committed change
                log.exception("registry change listener failed")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # WAL lets the API write while the collectors' directory reads; harmless (ignored) for in-memory databases.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
