"""The alert lifecycle store: alerts, silences and the notification log, in SQL (SQLite by default, PostgreSQL by URL).

One open alert per (rule, device) is enforced by the database: `open_key` is UNIQUE and holds
"rule|device_id" while the alert is pending or firing, NULL once resolved (NULLs never collide), so two
evaluators racing to open the same alert get one row. Times are UTC nanoseconds (BigInteger). A pending alert
not shown yet is an `AlertCandidate` in `rules_alert_candidates` (primary key (rule, device)).

The tables live on the registry's shared `core.db.Base`, so one Alembic history migrates them together
(`core/migrations/versions/0002_rules.py`): in production the schema comes from `RegistryStore(url).migrate()`.
`AlertStore` only creates its own tables itself on a database that Alembic does not manage (unit tests, a
throwaway `sqlite://` replay); on a migrated database it checks that the migration created them.
"""

from __future__ import annotations

import itertools
import json
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert, Update

from core.db import Base
from core.time import NS
from rules.timeutil import format_en, to_utc

ALEMBIC_VERSION_TABLE = "alembic_version"


OPEN_STATES = ("pending", "firing")
STATES = ("pending", "firing", "resolved")
LABEL_NAMES = ("rule", "device_id", "city", "district", "feed", "severity")


class AlertRow(Base):
    __tablename__ = "rules_alerts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule: Mapped[str] = mapped_column(String(120), index=True)
    device_id: Mapped[str] = mapped_column(String(120), index=True)
    city: Mapped[str] = mapped_column(String(80), default="")
    district: Mapped[str] = mapped_column(String(80), default="")
    feed: Mapped[str] = mapped_column(String(20), default="")
    severity: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(10), index=True)
    open_key: Mapped[str | None] = mapped_column(String(250), unique=True, nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    message_th: Mapped[str] = mapped_column(Text, default="")
    message_en: Mapped[str] = mapped_column(Text, default="")
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    started_ns: Mapped[int] = mapped_column(BigInteger)
    fired_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_ns: Mapped[int] = mapped_column(BigInteger)
    ack_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    ack_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ack_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    flap_count: Mapped[int] = mapped_column(Integer, default=0)


class CandidateRow(Base):
    """A pending alert not shown yet (`AlertCandidate`): one per (rule, device) whose condition holds, waiting
    for its `for:` or for `show_pending_after_s`. Written in the transaction of its reading's batch, so a
    restart resumes the `for:` from when the condition began."""

    __tablename__ = "rules_alert_candidates"

    rule: Mapped[str] = mapped_column(String(120), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    since_ns: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)


class SilenceRow(Base):
    __tablename__ = "rules_silences"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    matchers: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    starts_ns: Mapped[int] = mapped_column(BigInteger)
    ends_ns: Mapped[int] = mapped_column(BigInteger, index=True)
    created_by: Mapped[str] = mapped_column(String(120))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_ns: Mapped[int] = mapped_column(BigInteger)


class NotificationRow(Base):
    """One (receiver, alert, event) delivery; `dedup_key` is unique so nothing is sent twice, even after a restart."""

    __tablename__ = "rules_notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(400), unique=True)
    message_id: Mapped[str] = mapped_column(String(32), index=True)
    alert_id: Mapped[str] = mapped_column(String(32), index=True)
    receiver: Mapped[str] = mapped_column(String(120), index=True)
    group_key: Mapped[str] = mapped_column(String(400), default="")
    kind: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(20), index=True)  # queued | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    updated_ns: Mapped[int] = mapped_column(BigInteger)


class OutboxRow(Base):
    """One message owed to a receiver (rules/notify/outbox.py): written before the first attempt, `sent` only after
    the receiver accepted it; `owed` rows are resumed, oldest first, when the process starts again."""

    __tablename__ = "rules_notification_outbox"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the message id of the notification log rows
    receiver: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(40))
    group_key: Mapped[str] = mapped_column(String(400), default="")
    alert_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    severity: Mapped[str] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(12))  # owed | sent | failed | expired
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    fallback: Mapped[str | None] = mapped_column(String(120), nullable=True)  # the route's fallback receiver
    fallback_after_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    escalated: Mapped[int] = mapped_column(Integer, default=0)  # 1 once handed to the fallback receiver
    first_failure_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    next_attempt_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    # which process is sending it, until when (wall clock): several pipelines on one database never send one twice
    lease_owner: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_until_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    updated_ns: Mapped[int] = mapped_column(BigInteger)


Index("ix_rules_notification_outbox_owed", OutboxRow.state, OutboxRow.receiver, OutboxRow.created_ns)
Index("ix_rules_alerts_rule_device", AlertRow.rule, AlertRow.device_id)

# The tables this module owns on the shared metadata (the registry's tables are the migrations' business).
RULES_TABLES: tuple[Table, ...] = tuple(
    Base.metadata.tables[name]
    for name in ("rules_alerts", "rules_silences", "rules_notifications", "rules_notification_outbox",
                 "rules_alert_candidates")
)


class SchemaMissingError(RuntimeError):
    """The database is managed by Alembic but lacks the rules tables: it has not been migrated to the head."""


def ensure_schema(engine: Engine, *, create: bool = True) -> None:
    """Make sure the rules tables exist.

    A database under Alembic (it has `alembic_version`) is never changed here: its tables come from the
    migrations, and a missing table is an error telling to migrate. A bare database (unit tests, a throwaway
    `sqlite://`) gets the rules tables created when `create` is true (only those: creating the registry's
    tables outside Alembic would make a later `migrate()` fail).
    """
    names = set(inspect(engine).get_table_names())
    wanted = {t.name for t in RULES_TABLES}
    if ALEMBIC_VERSION_TABLE in names:
        missing = sorted(wanted - names)
        if missing:
            raise SchemaMissingError(
                f"the database is managed by Alembic but has no {', '.join(missing)}: "
                "migrate it first (`RegistryStore(url).migrate()`, run by `nakhon run` at start)"
            )
        return
    if create and not wanted <= names:
        Base.metadata.create_all(engine, tables=list(RULES_TABLES))


_ID_SALT = secrets.randbits(64)  # drawn once per process: two processes collide only with odds of 2**-64
_ID_SEQUENCE = itertools.count()  # thread-safe: one process never makes the same id twice


def new_alert_id() -> str:
    """A fresh alert id, 32 hex digits: the wall-clock time in ns, then this process's salt plus a sequence
    number. Time first, so a new row lands at the end of the primary-key index (a random `uuid4` dirtied a
    random index page per insert: a flapping storm's commit wrote ~1.5× the pages) and makes no system call
    for randomness. Not a secret: acknowledge links are signed, the API needs a role."""
    return f"{time.time_ns():016x}{(_ID_SALT + next(_ID_SEQUENCE)) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


@dataclass(slots=True)
class Alert:
    """A plain snapshot of one alert (safe to pass between threads and tasks)."""

    id: str
    rule: str
    device_id: str
    city: str
    district: str
    feed: str
    severity: str
    state: str
    value: float | None
    threshold: float | None
    message_th: str
    message_en: str
    labels: dict[str, str]
    started_ns: int
    fired_ns: int | None
    resolved_ns: int | None
    updated_ns: int
    ack_by: str | None = None
    ack_ns: int | None = None
    ack_comment: str | None = None
    flap_count: int = 0

    @classmethod
    def opened(
        cls,
        *,
        rule: str,
        device_id: str,
        city: str,
        district: str,
        feed: str,
        severity: str,
        t_ns: int,
        firing: bool,
        value: float | None = None,
        threshold: float | None = None,
        message_th: str = "",
        message_en: str = "",
        labels: dict[str, str] | None = None,
    ) -> Alert:
        """A new alert of (rule, device), pending or firing at once, with a fresh id."""
        return cls(
            id=new_alert_id(), rule=rule, device_id=device_id, city=city, district=district, feed=feed,
            severity=severity, state="firing" if firing else "pending", value=value, threshold=threshold,
            message_th=message_th, message_en=message_en, labels=dict(labels or {}), started_ns=t_ns,
            fired_ns=t_ns if firing else None, resolved_ns=None, updated_ns=t_ns,
        )

    def fired(self, t_ns: int, value: float | None = None, threshold: float | None = None,
              message_th: str | None = None, message_en: str | None = None) -> Alert:
        """The snapshot after pending -> firing at `t_ns` (a None argument keeps what the alert has)."""
        return self._next(
            "firing", self.value if value is None else value, self.threshold if threshold is None else threshold,
            self.message_th if message_th is None else message_th,
            self.message_en if message_en is None else message_en, t_ns, self.resolved_ns, t_ns,
        )

    def resolved(self, t_ns: int, value: float | None = None) -> Alert:
        """The snapshot after pending|firing -> resolved at `t_ns`."""
        return self._next("resolved", self.value if value is None else value, self.threshold, self.message_th,
                          self.message_en, self.fired_ns, t_ns, t_ns)

    def flapped(self, t_ns: int) -> Alert:
        """The snapshot after one more damped flap at `t_ns` (no state change)."""
        return Alert(self.id, self.rule, self.device_id, self.city, self.district, self.feed, self.severity,
                     self.state, self.value, self.threshold, self.message_th, self.message_en, self.labels,
                     self.started_ns, self.fired_ns, self.resolved_ns, t_ns, self.ack_by, self.ack_ns,
                     self.ack_comment, self.flap_count + 1)

    def _next(self, state: str, value: float | None, threshold: float | None, message_th: str, message_en: str,
              fired_ns: int | None, resolved_ns: int | None, updated_ns: int) -> Alert:
        """A copy with the columns a state change writes (`dataclasses.replace` costs 3× as much: a flapping
        storm makes two snapshots per reading). The labels dict is shared: snapshots never mutate it."""
        return Alert(self.id, self.rule, self.device_id, self.city, self.district, self.feed, self.severity, state,
                     value, threshold, message_th, message_en, self.labels, self.started_ns, fired_ns, resolved_ns,
                     updated_ns, self.ack_by, self.ack_ns, self.ack_comment, self.flap_count)

    @property
    def acknowledged(self) -> bool:
        return self.ack_ns is not None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("started_ns", "fired_ns", "resolved_ns", "updated_ns", "ack_ns"):
            v = out[key]
            out[key.replace("_ns", "_at")] = to_utc(v).isoformat() if v is not None else None
        return out


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """A pending alert not shown yet: the condition of `rule` holds on `device_id` since `since_ns` (with the
    opening evaluation's value). It becomes an alert (pending from `since_ns`) once it held for
    `show_pending_after_s`, or fires once it held for the rule's `for:`; a clear reading before then withdraws
    it. A flap shorter than that costs one narrow row written and deleted, not an alert's row, points and
    messages (a Prometheus pending alert is not stored at all; this one survives a restart)."""

    rule: str
    device_id: str
    since_ns: int
    value: float | None = None
    threshold: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.device_id)


# A batch's candidate changes: the final candidate of each (rule, device), None where it was withdrawn.
CandidateChanges = Mapping[tuple[str, str], AlertCandidate | None]


@dataclass(slots=True)
class Silence:
    id: str
    matchers: list[dict[str, str]]
    starts_ns: int
    ends_ns: int
    created_by: str
    comment: str
    created_ns: int

    def active(self, now_ns: int) -> bool:
        return self.starts_ns <= now_ns < self.ends_ns

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["starts_at"] = to_utc(self.starts_ns).isoformat()
        out["ends_at"] = to_utc(self.ends_ns).isoformat()
        out["created_at"] = to_utc(self.created_ns).isoformat()
        return out


@dataclass(slots=True)
class NotificationLog:
    id: int
    message_id: str
    alert_id: str
    receiver: str
    group_key: str
    kind: str
    outcome: str
    attempts: int
    error: str | None
    created_ns: int
    updated_ns: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        out["created_at"] = to_utc(self.created_ns).isoformat()
        out["updated_at"] = to_utc(self.updated_ns).isoformat()
        return out


# The alert record's mapping to its row: every field of `Alert` is the column of that name, plus `open_key`
# (derived: "rule|device_id" while open, NULL once resolved). `alert_from_row` / `alert_row` are the only places
# that translate; `tests/rules/test_store.py` checks that the table has exactly these columns.
ALERT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Alert))


def alert_from_row(row: Mapping[Any, Any]) -> Alert:
    """The snapshot of a `rules_alerts` row (a Core row mapping)."""
    alert = Alert(**{name: row[name] for name in ALERT_FIELDS})
    alert.labels = dict(alert.labels or {})
    return alert


_ALERT_VALUES = attrgetter(*ALERT_FIELDS)  # one C call for the 21 fields (a flapping storm writes a row per reading)


def alert_row(alert: Alert) -> dict[str, Any]:
    """The `rules_alerts` row of a snapshot (every column)."""
    row = dict(zip(ALERT_FIELDS, _ALERT_VALUES(alert), strict=True))
    row["labels"] = dict(alert.labels)
    row["open_key"] = open_key(alert.rule, alert.device_id) if alert.is_open else None
    return row


def _silence(row: SilenceRow) -> Silence:
    return Silence(row.id, list(row.matchers), row.starts_ns, row.ends_ns, row.created_by, row.comment, row.created_ns)


def _note(row: NotificationRow) -> NotificationLog:
    return NotificationLog(
        row.id,
        row.message_id,
        row.alert_id,
        row.receiver,
        row.group_key,
        row.kind,
        row.outcome,
        row.attempts,
        row.error,
        row.created_ns,
        row.updated_ns,
    )


def open_key(rule: str, device_id: str) -> str:
    return f"{rule}|{device_id}"


@dataclass(slots=True)
class AlertWrite:
    """The net change of one alert in a batch (`AlertStore.apply_batch`): `alert` is its final snapshot.

    `insert`: opened in this batch (one INSERT of the final snapshot, resolved or not). Otherwise an UPDATE of
    the columns the engine owns, guarded by `expect`, the state the alert had when the batch began (someone
    else moving it meanwhile makes the write fail instead of overwriting). Acknowledgement columns are never
    written here: the API owns them."""

    alert: Alert
    insert: bool
    expect: str | None = None


# The columns a state change writes: an UPDATE never touches the identity or acknowledgement columns (the API
# owns those).
_STATE_COLUMNS = (
    "state", "value", "threshold", "message_th", "message_en", "fired_ns", "resolved_ns", "updated_ns", "flap_count",
    "open_key",
)
_STATE_PARAMS = tuple(f"b_{name}" for name in _STATE_COLUMNS if name != "open_key")
_STATE_VALUES = attrgetter(*(name for name in _STATE_COLUMNS if name != "open_key"))
_ALERTS: Table = Base.metadata.tables["rules_alerts"]
_CANDIDATES: Table = Base.metadata.tables["rules_alert_candidates"]
_INSERT = insert(_ALERTS).values({name: bindparam(name) for name in (*ALERT_FIELDS, "open_key")})
_INSERT_IF_FREE = postgresql_insert(_ALERTS).values(
    {name: bindparam(name) for name in (*ALERT_FIELDS, "open_key")}).on_conflict_do_nothing()
_UPDATE = (
    update(_ALERTS)
    .where(_ALERTS.c.id == bindparam("b_id"), _ALERTS.c.state == bindparam("b_expect"))
    .values({name: bindparam(f"b_{name}") for name in _STATE_COLUMNS})
)


# SQLite: a batch is written in multi-row statements (`INSERT … VALUES (…), (…)`, `UPDATE … FROM (VALUES …)`):
# one statement step per chunk instead of one per row. The driver binds a chunk's values in one C loop and runs
# the whole step without the GIL, so a commit made in a thread no longer waits for the GIL at every row (with
# `executemany`, each row's step gave the GIL away and took ~5 ms to get it back from a busy event loop).
_SQLITE_CHUNK_ROWS = 400  # × 22 columns, within SQLite's 32,766 bound variables
_INSERT_COLUMNS = (*ALERT_FIELDS, "open_key")
_INSERT_ROW = attrgetter(*ALERT_FIELDS)
_UPDATE_SET = ", ".join(f"{name} = v.column{i + 3}" for i, name in enumerate(_STATE_COLUMNS))
_UPDATE_WIDTH = 2 + len(_STATE_COLUMNS)  # id, expect, then the state columns
_LABELS_AT = ALERT_FIELDS.index("labels")


def _labels_json(labels: dict[str, str], memo: dict[tuple[tuple[str, str], ...], str]) -> str:
    """The labels column's JSON (as SQLAlchemy's JSON type stores it); a batch's alerts of one rule share it."""
    key = tuple(labels.items())
    found = memo.get(key)
    if found is None:
        found = memo[key] = json.dumps(labels)
    return found


def _values_sql(rows: int, columns: int) -> str:
    one = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([one] * rows)


@dataclass(slots=True)
class PreparedBatch:
    """A batch's net writes and, on SQLite, its statements with their values (`AlertStore.prepare`): pure
    Python, made on the caller's thread, so the thread that runs them (`apply_batch`) mostly waits on SQLite,
    which holds no GIL, instead of competing for the GIL with the event loop at every row."""

    writes: Sequence[AlertWrite]
    updates: list[tuple[str, list[Any]]] = field(default_factory=list)
    inserts: list[tuple[str, list[Any]]] = field(default_factory=list)
    candidates: CandidateChanges = field(default_factory=dict)
    candidate_statements: list[tuple[str, list[Any]]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.writes and not self.candidates


def _prepare_sqlite_candidates(prepared: PreparedBatch) -> None:
    """Every changed (rule, device) slot deleted, then the batch's final candidates inserted: a batch applied
    again (a retry after a commit whose outcome was lost) ends the same."""
    keys = list(prepared.candidates)
    for at in range(0, len(keys), _SQLITE_CHUNK_ROWS):
        chunk = keys[at:at + _SQLITE_CHUNK_ROWS]
        prepared.candidate_statements.append((
            f"DELETE FROM rules_alert_candidates WHERE (rule, device_id) IN (VALUES {_values_sql(len(chunk), 2)})",
            [part for key in chunk for part in key]))
    proposed = [c for c in prepared.candidates.values() if c is not None]
    for at in range(0, len(proposed), _SQLITE_CHUNK_ROWS):
        rows = proposed[at:at + _SQLITE_CHUNK_ROWS]
        prepared.candidate_statements.append((
            "INSERT INTO rules_alert_candidates (rule, device_id, since_ns, value, threshold) VALUES "
            f"{_values_sql(len(rows), 5)}",
            [v for c in rows for v in (c.rule, c.device_id, c.since_ns, c.value, c.threshold)]))


def _prepare_sqlite(writes: Sequence[AlertWrite], candidates: CandidateChanges) -> PreparedBatch:
    prepared = PreparedBatch(writes, candidates=candidates)
    _prepare_sqlite_candidates(prepared)
    memo: dict[tuple[tuple[str, str], ...], str] = {}
    changes = [w for w in writes if not w.insert]
    for at in range(0, len(changes), _SQLITE_CHUNK_ROWS):
        chunk = changes[at:at + _SQLITE_CHUNK_ROWS]
        params: list[Any] = []
        for w in chunk:
            alert = w.alert
            params.append(alert.id)
            params.append(w.expect)
            params.extend(_STATE_VALUES(alert))
            params.append(open_key(alert.rule, alert.device_id) if alert.is_open else None)
        prepared.updates.append((
            f"UPDATE rules_alerts SET {_UPDATE_SET} FROM (VALUES {_values_sql(len(chunk), _UPDATE_WIDTH)}) AS v"
            " WHERE rules_alerts.id = v.column1 AND rules_alerts.state = v.column2", params))
    inserts = [w.alert for w in writes if w.insert]
    for at in range(0, len(inserts), _SQLITE_CHUNK_ROWS):
        chunk_alerts = inserts[at:at + _SQLITE_CHUNK_ROWS]
        params = []
        for alert in chunk_alerts:
            row = list(_INSERT_ROW(alert))
            row[_LABELS_AT] = _labels_json(alert.labels, memo)
            params.extend(row)
            params.append(open_key(alert.rule, alert.device_id) if alert.is_open else None)
        prepared.inserts.append((
            f"INSERT INTO rules_alerts ({', '.join(_INSERT_COLUMNS)}) VALUES "
            f"{_values_sql(len(chunk_alerts), len(_INSERT_COLUMNS))} ON CONFLICT DO NOTHING", params))
    return prepared


def _unmatched_updates(conn: Connection, changes: Sequence[AlertWrite]) -> set[str]:
    """Which guarded UPDATEs of a batch did not match (fewer rows changed than written): the ids whose rows do
    not hold the snapshot written."""
    wanted = {(w.alert.id, w.alert.state, w.alert.updated_ns) for w in changes}
    held = {tuple(row) for row in conn.execute(
        select(_ALERTS.c.id, _ALERTS.c.state, _ALERTS.c.updated_ns).where(
            tuple_(_ALERTS.c.id, _ALERTS.c.state, _ALERTS.c.updated_ns).in_(list(wanted))
        )
    )}
    return {w.alert.id for w in changes if (w.alert.id, w.alert.state, w.alert.updated_ns) not in held}


def _apply_sqlite(conn: Connection, prepared: PreparedBatch) -> set[str]:
    """`AlertStore._apply_on` on SQLite: the prepared multi-row statements on the driver's cursor (same outcome:
    the UPDATEs first, guarded by `expect`; an INSERT whose `open_key` slot or id is taken is skipped, not an
    error, so the batch needs no savepoint, and a batch applied again, e.g. retried after a commit whose
    outcome was lost, changes nothing and fails nothing). Returns the ids of the writes that did not apply."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    failed: set[str] = set()
    try:
        for sql, params in prepared.candidate_statements:
            cursor.execute(sql, params)
        matched = 0
        for sql, params in prepared.updates:
            cursor.execute(sql, params)
            matched += cursor.rowcount
        inserted = 0
        for sql, params in prepared.inserts:
            cursor.execute(sql, params)
            inserted += cursor.rowcount
    finally:
        cursor.close()
    changes = [w for w in prepared.writes if not w.insert]
    if matched != len(changes):
        failed.update(_unmatched_updates(conn, changes))
    ids = [w.alert.id for w in prepared.writes if w.insert]
    if inserted != len(ids):  # a slot is taken (rare: a second evaluator): which rows are not there
        failed.update(_absent_ids(conn, ids))
    return failed


def _absent_ids(conn: Connection, ids: Sequence[str]) -> set[str]:
    """The alert ids of `ids` that have no row (their INSERT was skipped: the (rule, device) slot is taken)."""
    present: set[str] = set()
    for at in range(0, len(ids), 5_000):
        part = list(ids[at:at + 5_000])
        present.update(r[0] for r in conn.execute(select(_ALERTS.c.id).where(_ALERTS.c.id.in_(part))))
    return {i for i in ids if i not in present}


SQLITE_BUSY_TIMEOUT_MS = 30_000


class StoreBusyError(RuntimeError):
    """A write made `without_waiting` found the database locked by another writer; nothing was written."""


def _is_busy(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "database is locked" in str(orig)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if url not in ("sqlite://", "sqlite:///:memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: a commit survives the process being killed (what restarts are about); only an
                # OS crash or power cut can lose the last commits. FULL would fsync every state change and a
                # burst of alerts would stall the engine and, through its bounded queue, ingestion.
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class AlertStore:
    """Alerts, silences and the notification log. Synchronous (call from a thread in async code)."""

    def __init__(self, url: str | Engine = "sqlite:///nakhon-alerts.db", create: bool = True) -> None:
        """`create`: on a database Alembic does not manage, create the rules tables (a convenience for tests and
        throwaway databases). A migrated database is only checked (see `ensure_schema`)."""
        self.engine = make_engine(url) if isinstance(url, str) else url
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._local = threading.local()  # `without_waiting`, per thread
        if create:
            ensure_schema(self.engine, create=True)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # ---- alerts -------------------------------------------------------------------------------------------

    def open_alert(self, *, state: str, **alert: Any) -> tuple[Alert, bool]:
        """Open (pending or firing) the alert of (rule, device), or return the one already open: (alert, created).
        `alert`: the keyword arguments of `Alert.opened` but `firing` (rule, device_id, city, ..., t_ns)."""
        if state not in OPEN_STATES:
            raise ValueError(f"cannot open an alert as {state!r}")
        while True:
            opened = Alert.opened(firing=state == "firing", **alert)
            if not self.apply_batch([AlertWrite(opened, insert=True)]):
                return opened, True
            existing = self.get_open(opened.rule, opened.device_id)
            if existing is not None:
                return existing, False
            # resolved in between: try once more

    def _one(self, *where: Any) -> Alert | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_ALERTS).where(*where)).mappings().first()
        return alert_from_row(row) if row is not None else None

    def get(self, alert_id: str) -> Alert | None:
        return self._one(_ALERTS.c.id == alert_id)

    def get_open(self, rule: str, device_id: str) -> Alert | None:
        return self._one(_ALERTS.c.open_key == open_key(rule, device_id))

    def _transition(self, alert_id: str, expect: Sequence[str], change: Callable[[Alert], Alert]) -> Alert | None:
        """Apply `change` to the stored alert if it is in one of the `expect` states (None otherwise, or when
        someone else moved it between the read and the write)."""
        current = self.get(alert_id)
        if current is None or current.state not in expect:
            return None
        updated = change(current)
        if self.apply_batch([AlertWrite(updated, insert=False, expect=current.state)]):
            return None
        return self.get(alert_id)

    def fire(
        self,
        alert_id: str,
        t_ns: int,
        value: float | None = None,
        threshold: float | None = None,
        message_th: str | None = None,
        message_en: str | None = None,
    ) -> Alert | None:
        """pending -> firing. None when the alert was not pending (someone else moved it)."""
        return self._transition(alert_id, ("pending",),
                                lambda a: a.fired(t_ns, value, threshold, message_th, message_en))

    def resolve(self, alert_id: str, t_ns: int, value: float | None = None) -> Alert | None:
        """pending|firing -> resolved; frees the (rule, device) slot. None when it was not open."""
        return self._transition(alert_id, OPEN_STATES, lambda a: a.resolved(t_ns, value))

    def ack(self, alert_id: str, by: str, comment: str, t_ns: int) -> Alert | None:
        """Acknowledge at any point (pending, firing or resolved). None when the alert does not exist.

        The first acknowledgement stands (who and when); a later one is kept as a comment line under it."""
        alert, first = self.ack_once(alert_id, by, comment, t_ns)
        if alert is None or first:
            return alert
        return self.add_ack_comment(alert_id, by, comment, t_ns)

    def add_ack_comment(self, alert_id: str, by: str, comment: str, t_ns: int) -> Alert | None:
        """Append "by (time, Asia/Bangkok): comment" to the acknowledgement's comment (who and when stay)."""
        note = f"{by[:120]} ({format_en(t_ns)})" + (f": {comment}" if comment else "")
        with self.engine.begin() as conn:
            row = conn.execute(
                select(_ALERTS.c.ack_comment).where(_ALERTS.c.id == alert_id).with_for_update()
            ).first()
            if row is None:
                return None
            conn.execute(update(_ALERTS).where(_ALERTS.c.id == alert_id).values(
                ack_comment=f"{row.ack_comment}\n{note}" if row.ack_comment else note, updated_ns=t_ns))
        return self.get(alert_id)

    def ack_once(self, alert_id: str, by: str, comment: str, t_ns: int) -> tuple[Alert | None, bool]:
        """Acknowledge unless someone already did: (the alert, whether this call acknowledged it).

        The first acknowledgement stands: two people pressing the button, or a reload re-posting a form, do
        not overwrite who acknowledged first. (None, False) when the alert does not exist."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(_ALERTS)
                .where(_ALERTS.c.id == alert_id, _ALERTS.c.ack_ns.is_(None))
                .values(ack_by=by[:120], ack_comment=comment, ack_ns=t_ns, updated_ns=t_ns)
            )
        return self.get(alert_id), bool(getattr(result, "rowcount", 0))

    def note_flap(self, alert_id: str, t_ns: int) -> Alert | None:
        with self.engine.begin() as conn:
            conn.execute(
                update(_ALERTS)
                .where(_ALERTS.c.id == alert_id)
                .values(flap_count=_ALERTS.c.flap_count + 1, updated_ns=t_ns)
            )
        return self.get(alert_id)

    @property
    def writes_without_waiting(self) -> bool:
        """Whether `without_waiting` can make a write fail at once instead of waiting for another writer's lock
        (a SQLite file: its busy timeout is per connection). PostgreSQL always goes through a thread."""
        return self.engine.dialect.name == "sqlite" and self.engine.url.database not in (None, "", ":memory:")

    @contextmanager
    def without_waiting(self) -> Iterator[None]:
        """Within, on this thread: a write that finds the database locked by another writer (the registry's
        diagnostics share the SQLite file) raises `StoreBusyError` at once, with nothing written, instead of
        waiting up to the busy timeout. For writes made on the event loop's thread, which must never wait."""
        previous = getattr(self._local, "no_wait", False)
        self._local.no_wait = True
        try:
            yield
        finally:
            self._local.no_wait = previous

    def prepare(self, writes: Sequence[AlertWrite], candidates: CandidateChanges | None = None) -> PreparedBatch:
        """The batch ready for `apply_batch`: on SQLite its statements and values are made here (call it on the
        event loop's thread, then `apply_batch` in a thread). Cheap pure Python; no database access."""
        if self.engine.dialect.name == "sqlite":
            return _prepare_sqlite(writes, candidates or {})
        return PreparedBatch(writes, candidates=candidates or {})

    def apply_batch(self, writes: Sequence[AlertWrite] | PreparedBatch,
                    candidates: CandidateChanges | None = None) -> set[str]:
        """Apply the net state changes of a batch in one transaction (SQLite: multi-row statements; PostgreSQL:
        Core bulk statements). `writes` may come `prepare`d (with its candidates); `candidates`: the batch's
        final candidate of each changed (rule, device), None where withdrawn.

        Returns the ids of the writes that did not apply: an INSERT whose (rule, device) slot another evaluator
        holds (UNIQUE `open_key`), an UPDATE of an alert no longer in its `expect` state. Everything else is
        committed when this returns; a database error raises with nothing committed (`StoreBusyError` within
        `without_waiting` when another writer holds the lock)."""
        prepared = writes if isinstance(writes, PreparedBatch) else self.prepare(writes, candidates)
        if prepared.empty:
            return set()
        if not getattr(self._local, "no_wait", False):
            return self._apply_batch(prepared)
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA busy_timeout=0")
                try:
                    with conn.begin():
                        return self._apply_on(conn, prepared)
                finally:
                    raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        except (OperationalError, sqlite3.OperationalError) as exc:
            if not _is_busy(exc):
                raise
            raise StoreBusyError("the alert database is locked by another writer: nothing written") from exc

    def _apply_batch(self, prepared: PreparedBatch) -> set[str]:
        with self.engine.begin() as conn:
            return self._apply_on(conn, prepared)

    def _apply_on(self, conn: Connection, prepared: PreparedBatch) -> set[str]:
        if conn.dialect.name == "sqlite":
            return _apply_sqlite(conn, prepared)
        if prepared.candidates:  # as on SQLite: every changed slot deleted, the final candidates inserted
            keys = list(prepared.candidates)
            for at in range(0, len(keys), 5_000):
                conn.execute(delete(_CANDIDATES).where(
                    tuple_(_CANDIDATES.c.rule, _CANDIDATES.c.device_id).in_(keys[at:at + 5_000])))
            proposed = [asdict(c) for c in prepared.candidates.values() if c is not None]
            if proposed:
                conn.execute(insert(_CANDIDATES), proposed)
        writes = prepared.writes
        rows = [alert_row(w.alert) for w in writes if w.insert]
        changes = [w for w in writes if not w.insert]
        failed: set[str] = set()
        # UPDATEs first: a resolution in this batch frees the (rule, device) slot an INSERT of the same batch
        # takes (resolved, then opened again by a later reading of the batch).
        if changes:
            params = []
            for w in changes:
                alert = w.alert
                param = dict(zip(_STATE_PARAMS, _STATE_VALUES(alert), strict=True))
                param["b_open_key"] = open_key(alert.rule, alert.device_id) if alert.is_open else None
                param["b_id"], param["b_expect"] = alert.id, w.expect
                params.append(param)
            rowcount = self._execute_many(conn, _UPDATE, params)
            if rowcount != len(params):
                failed.update(_unmatched_updates(conn, changes))
        if rows and conn.dialect.name == "postgresql":
            # A row whose id or (rule, device) slot is taken is skipped, not an error (as on SQLite): a batch
            # retried after a commit whose outcome was lost re-inserts rows that are there and fails nothing.
            if self._execute_many(conn, _INSERT_IF_FREE, rows) != len(rows):
                failed.update(_absent_ids(conn, [row["id"] for row in rows]))
        elif rows:
            try:
                with conn.begin_nested():
                    self._execute_many(conn, _INSERT, rows)
            except (IntegrityError, sqlite3.IntegrityError):  # a slot is taken (rare: a second evaluator)
                for row in rows:  # find which, row by row
                    try:
                        with conn.begin_nested():
                            conn.execute(_INSERT, row)
                    except IntegrityError:
                        failed.add(row["id"])
        return failed

    def _execute_many(self, conn: Connection, stmt: Insert | Update, params: list[dict[str, Any]]) -> int | None:
        """`conn.execute(stmt, params)` (PostgreSQL: SQLite takes `_apply_sqlite`). The rows matched, None when
        the driver cannot say."""
        result = conn.execute(stmt, params)
        return result.rowcount if conn.dialect.supports_sane_multi_rowcount else None

    def open_alerts(self) -> list[Alert]:
        return self.list_alerts(states=OPEN_STATES, limit=None)

    def candidates(self) -> list[AlertCandidate]:
        """The pending alerts not shown yet (the engine resumes them at start)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_CANDIDATES.c.rule, _CANDIDATES.c.device_id, _CANDIDATES.c.since_ns,
                                       _CANDIDATES.c.value, _CANDIDATES.c.threshold)).all()
        return [AlertCandidate(*row) for row in rows]

    def list_alerts(
        self,
        *,
        state: str | None = None,
        states: Sequence[str] | None = None,
        severity: str | None = None,
        device_id: str | None = None,
        rule: str | None = None,
        city: str | None = None,
        feed: str | None = None,
        limit: int | None = 500,
    ) -> list[Alert]:
        c = _ALERTS.c
        stmt = select(_ALERTS)
        if state is not None:
            stmt = stmt.where(c.state == state)
        if states is not None:
            stmt = stmt.where(c.state.in_(list(states)))
        for col, val in ((c.severity, severity), (c.device_id, device_id), (c.rule, rule), (c.city, city),
                         (c.feed, feed)):
            if val is not None:
                stmt = stmt.where(col == val)
        stmt = stmt.order_by(c.updated_ns.desc(), c.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [alert_from_row(r) for r in conn.execute(stmt).mappings()]

    # ---- silences -----------------------------------------------------------------------------------------

    def add_silence(
        self, matchers: list[dict[str, str]], starts_ns: int, ends_ns: int, created_by: str, comment: str, now_ns: int
    ) -> Silence:
        if ends_ns <= starts_ns:
            raise ValueError("a silence must end after it starts")
        row = SilenceRow(
            id=uuid.uuid4().hex,
            matchers=matchers,
            starts_ns=starts_ns,
            ends_ns=ends_ns,
            created_by=created_by,
            comment=comment,
            created_ns=now_ns,
        )
        with self._tx() as s:
            s.add(row)
        return _silence(row)

    def list_silences(self, active_at_ns: int | None = None, include_expired: bool = True) -> list[Silence]:
        stmt = select(SilenceRow).order_by(SilenceRow.created_ns.desc())
        if active_at_ns is not None:
            stmt = stmt.where(SilenceRow.ends_ns > active_at_ns)
            if not include_expired:
                stmt = stmt.where(SilenceRow.starts_ns <= active_at_ns)
        with self._tx() as s:
            return [_silence(r) for r in s.scalars(stmt)]

    def get_silence(self, silence_id: str) -> Silence | None:
        with self._tx() as s:
            row = s.get(SilenceRow, silence_id)
            return _silence(row) if row else None

    def expire_silence(self, silence_id: str, now_ns: int) -> Silence | None:
        """End a silence now (kept for the record). None when it does not exist."""
        with self._tx() as s:
            row = s.get(SilenceRow, silence_id)
            if row is None:
                return None
            if row.ends_ns > now_ns:
                row.ends_ns = max(now_ns, row.starts_ns + 1)
            return _silence(row)

    # ---- notification log ---------------------------------------------------------------------------------

    def claim_notification(
        self, *, dedup_key: str, message_id: str, alert_id: str, receiver: str, group_key: str, kind: str, now_ns: int
    ) -> bool:
        """Record a delivery about to be attempted; False when it already was (dedup, also across restarts)."""
        row = NotificationRow(
            dedup_key=dedup_key,
            message_id=message_id,
            alert_id=alert_id,
            receiver=receiver,
            group_key=group_key,
            kind=kind,
            outcome="queued",
            attempts=0,
            error=None,
            created_ns=now_ns,
            updated_ns=now_ns,
        )
        try:
            with self._tx() as s:
                s.add(row)
            return True
        except IntegrityError:
            return False

    def list_notifications(
        self,
        *,
        failed: bool | None = None,
        receiver: str | None = None,
        alert_id: str | None = None,
        limit: int = 500,
        cities: Sequence[str] | None = None,
    ) -> list[NotificationLog]:
        """`cities`: only deliveries about alerts of those cities (a city-scoped caller); None: all."""
        stmt = select(NotificationRow)
        if cities is not None:
            stmt = stmt.where(NotificationRow.alert_id.in_(select(AlertRow.id).where(AlertRow.city.in_(list(cities)))))
        if failed is True:
            stmt = stmt.where(NotificationRow.outcome == "failed")
        elif failed is False:
            stmt = stmt.where(NotificationRow.outcome != "failed")
        if receiver is not None:
            stmt = stmt.where(NotificationRow.receiver == receiver)
        if alert_id is not None:
            stmt = stmt.where(NotificationRow.alert_id == alert_id)
        stmt = stmt.order_by(NotificationRow.id.desc()).limit(limit)
        with self._tx() as s:
            return [_note(r) for r in s.scalars(stmt)]


def seconds(ns: int) -> float:
    return ns / NS
