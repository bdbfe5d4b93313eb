"""The registry store: devices, profiles, overrides, API tokens, the audit log and recent raw messages.

One sync SQLAlchemy engine from a URL: SQLite by default (`sqlite:///{data_dir}/registry.db`), PostgreSQL
with `postgresql+psycopg://...`. Every change writes its audit entry in the same transaction.
The collectors never query this per message: they read `RegistryDirectory`, an in-memory copy.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from core.db import MIGRATIONS_DIR, utcnow
from core.feeds import FEED_SPECS
from core.model import DeviceInfo
from gateway.errors import (
    ConflictError,
    DeviceNotFoundError,
    FieldProblem,
    InvalidInputError,
    ProfileNotFoundError,
    TokenNotFoundError,
)
from gateway.registry.csv_import import ParsedCsv
from gateway.registry.models import (
    ApiToken,
    AuditEntry,
    CityName,
    Device,
    DeviceOverride,
    DeviceProfile,
    DeviceRecentMessage,
)
from gateway.registry.schemas import (
    ROLES,
    AuditOut,
    DeviceOut,
    DevicePatch,
    DeviceSpec,
    DiagnosticsOut,
    ImportReport,
    OverridesOut,
    OverridesSpec,
    Page,
    ProfileOut,
    ProfilePatch,
    ProfileSpec,
    RecentMessageOut,
    TokenOut,
    check_expected_fields,
    topic_for,
)
from gateway.secrets import hash_api_token, new_api_token, redact

log = logging.getLogger(__name__)

RECENT_MESSAGES_KEPT = 20
RECENT_PAYLOAD_BYTES = 2048
CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits

T = TypeVar("T")


@dataclass(slots=True)
class RecentMessage:
    """One raw message as the collectors saw it, for a device's diagnostics page."""

    topic: str
    payload: bytes | str
    accepted: bool
    reason: str | None = None
    time_ns: int | None = None  # UTC nanoseconds since the epoch; None means "now"


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _snapshot(obj: Any, columns: Iterable[str]) -> dict[str, Any]:
    """A JSON-ready, secret-free copy of an ORM row for the audit log."""
    return redact({c: _iso(getattr(obj, c)) for c in columns})


DEVICE_COLUMNS = tuple(c.key for c in Device.__table__.columns)
PROFILE_COLUMNS = tuple(c.key for c in DeviceProfile.__table__.columns)
# Columns a CSV row or a PATCH may change; anything else (credentials, status) has its own operation.
DEVICE_EDITABLE = ("feed", "city", "district", "name", "lat", "lon", "dev_eui", "profile", "site", "heartbeat_s")


def _payload_text(payload: bytes | str) -> str:
    raw = payload.encode() if isinstance(payload, str) else payload
    if len(raw) > RECENT_PAYLOAD_BYTES:
        raw = raw[:RECENT_PAYLOAD_BYTES]
        return raw.decode("utf-8", errors="ignore")  # may have cut a multi-byte character in half
    return raw.decode("utf-8", errors="replace")


def _equal(model: Any, **values: Any) -> list[Any]:
    """`column == value` for each filter given (None means: not filtered)."""
    return [getattr(model, name) == value for name, value in values.items() if value is not None]


def _ns_to_datetime(time_ns: int | None) -> datetime:
    if time_ns is None:
        return utcnow()
    return datetime.fromtimestamp(time_ns / 1e9, tz=UTC)


class RegistryStore:
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
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()

    @classmethod
    def for_data_dir(cls, data_dir: str | Path) -> RegistryStore:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path / 'registry.db'}")

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

    def add_change_listener(self, callback: Callable[[], None]) -> None:
        """`callback()` runs after every committed change to devices, profiles or overrides (in-process)."""
        with self._listeners_lock:
            self._listeners.append(callback)

    def remove_change_listener(self, callback: Callable[[], None]) -> None:
        with self._listeners_lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _changed(self) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback()
            except Exception:  # a listener's bug must not undo a committed change
                log.exception("registry change listener failed")

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @staticmethod
    def _audit(
        session: Session,
        *,
        actor: str,
        action: str,
        entity_type: str,
        entity_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        session.add(
            AuditEntry(
                at=utcnow(),
                actor=actor,
                action=action,
                entity_type=entity_type,
                entity_id=entity_id,
                before=redact(before),
                after=redact(after),
            )
        )

    # ------------------------------------------------------------------ devices

    @staticmethod
    def _device_out(device: Device, now: datetime | None = None) -> DeviceOut:
        now = now or utcnow()
        out = DeviceOut.model_validate(device)
        out.in_maintenance = device.maintenance_until is not None and device.maintenance_until > now
        out.has_mqtt_credentials = device.mqtt_password_hash is not None
        out.topic = topic_for(device.city, device.feed, device.device_id)
        return out

    @staticmethod
    def _load_device(session: Session, device_id: str, *, for_update: bool = False) -> Device:
        query = select(Device).where(Device.device_id == device_id)
        if for_update:
            query = query.with_for_update()
        device = session.scalars(query).one_or_none()
        if device is None:
            raise DeviceNotFoundError(device_id)
        return device

    @staticmethod
    def _check_profile(session: Session, profile: str | None, feed: str, *, row: int | None = None) -> None:
        if profile is None:
            return
        found = session.get(DeviceProfile, profile)
        if found is None:
            raise InvalidInputError([FieldProblem("profile", f"device profile {profile!r} does not exist", row=row)])
        if found.feed != feed:
            raise InvalidInputError(
                [FieldProblem("profile", f"profile {profile!r} is for feed {found.feed!r}, not {feed!r}", row=row)]
            )

    @staticmethod
    def _check_dev_eui_free(session: Session, dev_eui: str | None, device_id: str) -> None:
        if dev_eui is None:
            return
        owner = session.scalars(select(Device.device_id).where(Device.dev_eui == dev_eui)).one_or_none()
        if owner is not None and owner != device_id:
            raise ConflictError(
                f"DevEUI {dev_eui} is already registered to device {owner!r}",
                message_th="DevEUI นี้ถูกใช้กับอุปกรณ์อื่นแล้ว",
                field="dev_eui",
                device_id=owner,
            )

    def create_device(
        self,
        spec: DeviceSpec,
        *,
        actor: str,
        mqtt_username: str | None = None,
        mqtt_password_hash: str | None = None,
    ) -> DeviceOut:
        try:
            with self._transaction() as session:
                if session.get(Device, spec.device_id) is not None:
                    raise ConflictError(
                        f"device {spec.device_id!r} is already registered",
                        message_th="อุปกรณ์นี้ลงทะเบียนไว้แล้ว",
                        device_id=spec.device_id,
                    )
                self._check_profile(session, spec.profile, spec.feed)
                self._check_dev_eui_free(session, spec.dev_eui, spec.device_id)
                now = utcnow()
                device = Device(
                    **spec.model_dump(),
                    status="active",
                    mqtt_username=mqtt_username,
                    mqtt_password_hash=mqtt_password_hash,
                    created_at=now,
                    updated_at=now,
                )
                session.add(device)
                session.flush()
                self._audit(
                    session,
                    actor=actor,
                    action="device.create",
                    entity_type="device",
                    entity_id=spec.device_id,
                    before=None,
                    after=_snapshot(device, DEVICE_COLUMNS),
                )
                out = self._device_out(device, now)
        except IntegrityError as exc:  # a concurrent create won the race
            raise ConflictError(
                f"device {spec.device_id!r} or its DevEUI is already registered", device_id=spec.device_id
            ) from exc
        self._changed()
        return out

    def get_device(self, device_id: str) -> DeviceOut:
        with self._sessions() as session:
            return self._device_out(self._load_device(session, device_id))

    def device_cities(self, device_ids: Sequence[str]) -> dict[str, str]:
        """{device_id: city} of those of `device_ids` that are registered."""
        found: dict[str, str] = {}
        with self._sessions() as session:
            for chunk in _chunks(list(device_ids)):
                for device_id, city in session.execute(
                    select(Device.device_id, Device.city).where(Device.device_id.in_(chunk))
                ):
                    found[device_id] = city
        return found

    def broker_view(self) -> list[tuple[str, str, str, str, str | None, bool]]:
        """(device_id, status, city, feed, mqtt_username, has password) of every device: what reconcile compares."""
        with self._sessions() as session:
            rows = session.execute(
                select(
                    Device.device_id, Device.status, Device.city, Device.feed, Device.mqtt_username,
                    Device.mqtt_password_hash.is_not(None),
                ).order_by(Device.device_id)
            ).all()
            return [(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def clear_credentials(self, device_id: str, *, actor: str) -> DeviceOut:
        """The broker has no account for the device any more: the registry stops saying it has one."""
        return self._set_device_columns(
            device_id, {"mqtt_username": None, "mqtt_password_hash": None}, actor=actor, action="device.reconcile"
        )

    def device_exists(self, device_id: str) -> bool:
        with self._sessions() as session:
            return session.get(Device, device_id) is not None

    def list_devices(
        self,
        *,
        city: str | None = None,
        district: str | None = None,
        feed: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        cities: Sequence[str] | None = None,
    ) -> Page[DeviceOut]:
        """`cities`: only devices in these cities (a city-scoped caller); None: every city."""
        conditions = _equal(Device, city=city, district=district, feed=feed, status=status)
        if cities is not None:
            conditions.append(Device.city.in_(list(cities)))
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(Device).where(*conditions)) or 0
            rows = session.scalars(
                select(Device).where(*conditions).order_by(Device.device_id).limit(limit).offset(offset)
            ).all()
            now = utcnow()
            return Page[DeviceOut](
                total=total, limit=limit, offset=offset, items=[self._device_out(d, now) for d in rows]
            )

    def update_device(self, device_id: str, patch: DevicePatch, *, actor: str) -> tuple[DeviceOut, DeviceOut]:
        """Apply the keys the patch sets; returns (before, after)."""
        changes = patch.model_dump(exclude_unset=True)
        problems = [
            FieldProblem(key, "cannot be null")
            for key in ("feed", "city", "district", "name")
            if key in changes and changes[key] is None
        ]
        if problems:
            raise InvalidInputError(problems)
        try:
            with self._transaction() as session:
                device = self._load_device(session, device_id, for_update=True)
                before_out = self._device_out(device)
                before = _snapshot(device, DEVICE_COLUMNS)
                if "site" in changes and changes["site"] is None:
                    changes["site"] = {}
                feed = changes.get("feed", device.feed)
                profile = changes.get("profile", device.profile)
                if "feed" in changes or "profile" in changes:
                    self._check_profile(session, profile, feed)
                if changes.get("dev_eui"):
                    self._check_dev_eui_free(session, changes["dev_eui"], device_id)
                if "feed" in changes and changes["feed"] != device.feed:
                    self._check_calibration_fields(session, device_id, changes["feed"])
                for key, value in changes.items():
                    setattr(device, key, value)
                if _snapshot(device, DEVICE_COLUMNS) == before:
                    return before_out, before_out
                device.updated_at = utcnow()
                session.flush()
                self._audit(
                    session,
                    actor=actor,
                    action="device.update",
                    entity_type="device",
                    entity_id=device_id,
                    before=before,
                    after=_snapshot(device, DEVICE_COLUMNS),
                )
                after_out = self._device_out(device)
        except IntegrityError as exc:
            raise ConflictError(
                f"update of device {device_id!r} conflicts with another device", device_id=device_id
            ) from exc
        self._changed()
        return before_out, after_out

    def _check_calibration_fields(self, session: Session, device_id: str, feed: str) -> None:
        override = session.get(DeviceOverride, device_id)
        if override is None:
            return
        known = FEED_SPECS[feed].field_names
        stale = [f for f in override.calibration if f not in known]
        if stale:
            raise InvalidInputError(
                [
                    FieldProblem(
                        "feed",
                        f"the device's calibration names fields that feed {feed!r} does not have: "
                        f"{', '.join(stale)}; change the overrides first",
                    )
                ]
            )

    def _set_device_columns(self, device_id: str, values: dict[str, Any], *, actor: str, action: str) -> DeviceOut:
        with self._transaction() as session:
            device = self._load_device(session, device_id, for_update=True)
            before = _snapshot(device, DEVICE_COLUMNS)
            for key, value in values.items():
                setattr(device, key, value)
            device.updated_at = utcnow()
            session.flush()
            self._audit(
                session,
                actor=actor,
                action=action,
                entity_type="device",
                entity_id=device_id,
                before=before,
                after=_snapshot(device, DEVICE_COLUMNS),
            )
            out = self._device_out(device)
        self._changed()
        return out

    def set_credentials(self, device_id: str, *, mqtt_username: str, mqtt_password_hash: str, actor: str) -> DeviceOut:
        device = self.get_device(device_id)
        if device.status == "retired":
            raise ConflictError(
                f"device {device_id!r} is retired: it gets no credentials",
                message_th="อุปกรณ์นี้ถูกปลดระวางแล้ว",
                device_id=device_id,
            )
        return self._set_device_columns(
            device_id,
            {"mqtt_username": mqtt_username, "mqtt_password_hash": mqtt_password_hash},
            actor=actor,
            action="device.rotate_credentials",
        )

    def retire_device(self, device_id: str, *, actor: str) -> DeviceOut:
        """Mark retired and drop its credentials. Retiring a retired device changes nothing."""
        device = self.get_device(device_id)
        if device.status == "retired":
            return device
        return self._set_device_columns(
            device_id, {"status": "retired", "mqtt_password_hash": None}, actor=actor, action="device.retire"
        )

    def set_maintenance(self, device_id: str, until: datetime | None, *, actor: str) -> DeviceOut:
        """Maintenance is active while `until` is in the future: it ends by itself, no job needed."""
        if until is not None and (until.tzinfo is None or until.utcoffset() is None):
            raise InvalidInputError([FieldProblem("until", "give a UTC offset, e.g. 2026-11-22T08:00:00+07:00")])
        # Past times are accepted: they simply mean "not in maintenance" (maintenance is active iff until > now).
        return self._set_device_columns(
            device_id,
            {"maintenance_until": until.astimezone(UTC) if until else None},
            actor=actor,
            action="device.maintenance" if until else "device.maintenance_end",
        )

    # ------------------------------------------------------------------ city names

    def set_city_name(self, slug: str, name_th: str, name_en: str, *, actor: str) -> None:
        """The city's display names (Thai, English) for messages people read; audited."""
        if not slug or not (name_th.strip() or name_en.strip()):
            raise InvalidInputError([FieldProblem("name_th", "give the city's Thai and/or English name")])
        with self._sessions() as session, session.begin():
            row = session.get(CityName, slug)
            before = {"name_th": row.name_th, "name_en": row.name_en} if row is not None else None
            if row is None:
                row = CityName(slug=slug)
                session.add(row)
            row.name_th, row.name_en, row.updated_at = name_th.strip(), name_en.strip(), utcnow()
            after = {"name_th": row.name_th, "name_en": row.name_en}
            self._audit(
                session, actor=actor, action="city.name", entity_type="city", entity_id=slug, before=before, after=after
            )

    def city_names(self) -> dict[str, tuple[str, str]]:
        """slug -> (Thai name, English name) of every named city."""
        with self._sessions() as session:
            return {r.slug: (r.name_th, r.name_en) for r in session.scalars(select(CityName))}

    # ------------------------------------------------------------------ CSV import

    def import_devices(self, parsed: ParsedCsv, *, actor: str, atomic: bool, dry_run: bool = False) -> ImportReport:
        """Upsert the parsed rows in one transaction with bulk statements.

        `atomic=True` (the API): any bad row means nothing is written. `atomic=False` (the CLI): good rows are
        written, bad ones reported. Rows equal to what is stored are counted `unchanged` and not audited.
        """
        try:
            return self._import_devices(parsed, actor=actor, atomic=atomic, dry_run=dry_run)
        except IntegrityError:
            # A parallel import or create of the same ids (or DevEUIs) committed first. The driver's message holds
            # the rows' values: it is not passed on, the caller gets a 409 naming no value.
            raise ConflictError(
                "another import or registration of some of these devices committed at the same time; "
                "nothing was imported: send the file again",
                message_th="มีการนำเข้าหรือลงทะเบียนอุปกรณ์ชุดเดียวกันพร้อมกัน จึงยังไม่ได้นำเข้า โปรดส่งไฟล์อีกครั้ง",
            ) from None

    def _import_devices(self, parsed: ParsedCsv, *, actor: str, atomic: bool, dry_run: bool) -> ImportReport:
        problems = list(parsed.problems)
        rows = parsed.rows
        created: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        unchanged = 0
        topic_changes: list[tuple[str, str, str]] = []
        with self._sessions() as session, session.begin():
            profiles = {p.name: p.feed for p in session.scalars(select(DeviceProfile))}
            existing: dict[str, Device] = {}
            ids = [r.spec.device_id for r in rows]
            for chunk in _chunks(ids):
                for device in session.scalars(select(Device).where(Device.device_id.in_(chunk))):
                    existing[device.device_id] = device
            euis = [r.spec.dev_eui for r in rows if r.spec.dev_eui]
            eui_owner: dict[str, str] = {}
            for chunk in _chunks(euis):
                for eui, owner in session.execute(
                    select(Device.dev_eui, Device.device_id).where(Device.dev_eui.in_(chunk))
                ):
                    eui_owner[str(eui)] = owner
            now = utcnow()
            for row in rows:
                spec = row.spec
                current = existing.get(spec.device_id)
                values: dict[str, Any] = {
                    "feed": spec.feed,
                    "city": spec.city,
                    "district": spec.district,
                    "name": spec.name,
                    "lat": spec.lat,
                    "lon": spec.lon,
                }
                for column in ("profile", "dev_eui", "heartbeat_s"):
                    if column in row.given or current is None:
                        values[column] = getattr(spec, column)
                site = dict(current.site) if current is not None else {}
                for column in row.given:
                    if column.startswith("site_"):
                        key = column[len("site_") :]
                        if key in spec.site:
                            site[key] = spec.site[key]
                        else:
                            site.pop(key, None)
                values["site"] = site
                profile = values.get("profile", current.profile if current else None)
                row_problems: list[FieldProblem] = []
                if profile is not None and profile not in profiles:
                    row_problems.append(
                        FieldProblem("profile", f"device profile {profile!r} does not exist", row=row.line)
                    )
                elif profile is not None and profiles[profile] != spec.feed:
                    row_problems.append(
                        FieldProblem("profile", f"profile {profile!r} is for feed {profiles[profile]!r}", row=row.line)
                    )
                eui = values.get("dev_eui")
                if eui and eui_owner.get(eui, spec.device_id) != spec.device_id:
                    row_problems.append(
                        FieldProblem(
                            "dev_eui", f"DevEUI {eui} is registered to device {eui_owner[eui]!r}", row=row.line
                        )
                    )
                if row_problems:
                    problems.extend(row_problems)
                    continue
                if current is None:
                    record = {
                        "device_id": spec.device_id,
                        **values,
                        "status": "active",
                        "maintenance_until": None,
                        "mqtt_username": None,
                        "mqtt_password_hash": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                    created.append(record)
                    audits.append(
                        {
                            "at": now,
                            "actor": actor,
                            "action": "device.import_create",
                            "entity_type": "device",
                            "entity_id": spec.device_id,
                            "before": None,
                            "after": redact({k: _iso(v) for k, v in record.items()}),
                        }
                    )
                    continue
                before = {k: getattr(current, k) for k in values}
                if before == values:
                    unchanged += 1
                    continue
                updated.append({"device_id": spec.device_id, **values, "updated_at": now})
                old_topic = topic_for(current.city, current.feed, current.device_id)
                new_topic = topic_for(spec.city, spec.feed, spec.device_id)
                if current.mqtt_password_hash is not None and old_topic != new_topic:
                    topic_changes.append((spec.device_id, old_topic, new_topic))
                audits.append(
                    {
                        "at": now,
                        "actor": actor,
                        "action": "device.import_update",
                        "entity_type": "device",
                        "entity_id": spec.device_id,
                        "before": redact({k: _iso(v) for k, v in before.items()}),
                        "after": redact({k: _iso(v) for k, v in values.items()}),
                    }
                )
            write = not dry_run and not (atomic and problems)
            if write:
                if created:
                    session.execute(insert(Device), created)
                if updated:
                    session.execute(update(Device), updated)
                if audits:
                    session.execute(insert(AuditEntry), audits)
            else:
                session.rollback()
        problems.sort(key=lambda p: (p.row or 0, p.field))
        report = ImportReport(
            dry_run=dry_run,
            applied=write,
            rows=parsed.total_rows,
            created=len(created),
            updated=len(updated),
            unchanged=unchanged,
            rejected=len({p.row for p in problems}),
            errors=[p.as_dict() for p in problems],
            created_ids=[r["device_id"] for r in created],
            updated_ids=[r["device_id"] for r in updated],
            topic_changes=topic_changes if write else [],
        )
        if write and (created or updated):
            self._changed()
        return report

    # ------------------------------------------------------------------ profiles

    def create_profile(self, spec: ProfileSpec, *, actor: str) -> ProfileOut:
        with self._transaction() as session:
            if session.get(DeviceProfile, spec.name) is not None:
                raise ConflictError(f"device profile {spec.name!r} already exists", profile=spec.name)
            now = utcnow()
            profile = DeviceProfile(**spec.model_dump(), created_at=now, updated_at=now)
            session.add(profile)
            session.flush()
            self._audit(
                session,
                actor=actor,
                action="profile.create",
                entity_type="profile",
                entity_id=spec.name,
                before=None,
                after=_snapshot(profile, PROFILE_COLUMNS),
            )
            out = ProfileOut.model_validate(profile)
        self._changed()
        return out

    def ensure_profiles(self, specs: list[ProfileSpec], *, actor: str) -> list[str]:
        """Create the rows of profiles loaded from YAML (shipped or `[domain] profiles_dir`) that the registry does
        not have yet, so a device can name any loaded profile without a prior API call. Existing rows are left
        as they are (operators tune them through the API); one of another feed is a `ConflictError`.
        Returns the names created."""
        with self._sessions() as session:
            existing = {p.name: p.feed for p in session.scalars(select(DeviceProfile))}
        created: list[str] = []
        for spec in specs:
            if spec.name in existing:
                if existing[spec.name] != spec.feed:
                    raise ConflictError(
                        f"device profile {spec.name!r} is for feed {existing[spec.name]!r} in the registry but "
                        f"{spec.feed!r} in its YAML file", profile=spec.name,
                    )
                continue
            try:
                self.create_profile(spec, actor=actor)
            except ConflictError:  # another process created it meanwhile
                continue
            created.append(spec.name)
        return created

    def get_profile(self, name: str) -> ProfileOut:
        with self._sessions() as session:
            profile = session.get(DeviceProfile, name)
            if profile is None:
                raise ProfileNotFoundError(name)
            return ProfileOut.model_validate(profile)

    def list_profiles(self) -> list[ProfileOut]:
        with self._sessions() as session:
            return [
                ProfileOut.model_validate(p)
                for p in session.scalars(select(DeviceProfile).order_by(DeviceProfile.name))
            ]

    def update_profile(self, name: str, patch: ProfilePatch, *, actor: str) -> ProfileOut:
        changes = patch.model_dump(exclude_unset=True)
        with self._transaction() as session:
            profile = session.get(DeviceProfile, name)
            if profile is None:
                raise ProfileNotFoundError(name)
            if changes.get("expected_fields") is not None:
                try:
                    check_expected_fields(profile.feed, changes["expected_fields"])
                except ValueError as exc:
                    raise InvalidInputError([FieldProblem("expected_fields", str(exc))]) from exc
            for key in ("expected_fields", "default_thresholds", "description"):
                if key in changes and changes[key] is None:
                    changes[key] = [] if key == "expected_fields" else {} if key == "default_thresholds" else ""
            before = _snapshot(profile, PROFILE_COLUMNS)
            for key, value in changes.items():
                setattr(profile, key, value)
            profile.updated_at = utcnow()
            session.flush()
            self._audit(
                session,
                actor=actor,
                action="profile.update",
                entity_type="profile",
                entity_id=name,
                before=before,
                after=_snapshot(profile, PROFILE_COLUMNS),
            )
            out = ProfileOut.model_validate(profile)
        self._changed()
        return out

    def delete_profile(self, name: str, *, actor: str) -> None:
        with self._transaction() as session:
            profile = session.get(DeviceProfile, name)
            if profile is None:
                raise ProfileNotFoundError(name)
            users = session.scalar(select(func.count()).select_from(Device).where(Device.profile == name)) or 0
            if users:
                raise ConflictError(
                    f"device profile {name!r} is used by {users} device(s); move them to another profile first",
                    message_th="โปรไฟล์นี้ยังมีอุปกรณ์ใช้งานอยู่",
                    profile=name,
                    devices=users,
                )
            before = _snapshot(profile, PROFILE_COLUMNS)
            session.delete(profile)
            self._audit(
                session,
                actor=actor,
                action="profile.delete",
                entity_type="profile",
                entity_id=name,
                before=before,
                after=None,
            )
        self._changed()

    # ------------------------------------------------------------------ overrides

    def get_overrides(self, device_id: str) -> OverridesOut:
        with self._sessions() as session:
            self._load_device(session, device_id)
            override = session.get(DeviceOverride, device_id)
            if override is None:
                return OverridesOut(device_id=device_id, thresholds={}, calibration={})
            return OverridesOut.model_validate(override)

    def set_overrides(self, device_id: str, spec: OverridesSpec, *, actor: str) -> OverridesOut:
        """Replace the device's overrides (thresholds and calibration) as a whole."""
        with self._transaction() as session:
            device = self._load_device(session, device_id, for_update=True)
            known = FEED_SPECS[device.feed].field_names
            problems = [
                FieldProblem(f"calibration.{name}", f"not a field of feed {device.feed!r}; known: {', '.join(known)}")
                for name in spec.calibration
                if name not in known
            ]
            if problems:
                raise InvalidInputError(problems)
            override = session.get(DeviceOverride, device_id)
            before = None
            if override is None:
                override = DeviceOverride(device_id=device_id)
                session.add(override)
            else:
                before = {"thresholds": override.thresholds, "calibration": override.calibration}
            override.thresholds = dict(spec.thresholds)
            override.calibration = {k: v.model_dump() for k, v in spec.calibration.items()}
            override.updated_at = utcnow()
            session.flush()
            self._audit(
                session,
                actor=actor,
                action="device.overrides",
                entity_type="device",
                entity_id=device_id,
                before=before,
                after={"thresholds": override.thresholds, "calibration": override.calibration},
            )
            out = OverridesOut.model_validate(override)
        self._changed()
        return out

    # ------------------------------------------------------------------ API tokens

    def create_token(
        self,
        name: str,
        role: str,
        *,
        actor: str,
        expires_at: datetime | None = None,
        cities: Sequence[str] | None = None,
    ) -> tuple[TokenOut, str]:
        """Returns the token record and the token itself, which is never stored and cannot be shown again.
        `expires_at`: refused from then on; `cities`: limited to those cities' devices, alerts and silences."""
        if role not in ROLES:
            raise InvalidInputError([FieldProblem("role", f"must be one of {', '.join(ROLES)}", value=role)])
        if expires_at is not None and (expires_at.tzinfo is None or expires_at.utcoffset() is None):
            raise InvalidInputError([FieldProblem("expires_at", "give a UTC offset, e.g. 2027-01-01T00:00:00+07:00")])
        scope = sorted(set(cities)) if cities else None
        token = new_api_token()
        try:
            with self._transaction() as session:
                if session.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none() is not None:
                    raise ConflictError(f"an API token named {name!r} already exists", token=name)
                record = ApiToken(
                    name=name,
                    role=role,
                    token_hash=hash_api_token(token),
                    created_at=utcnow(),
                    expires_at=expires_at.astimezone(UTC) if expires_at else None,
                    cities=scope,
                )
                session.add(record)
                session.flush()
                self._audit(
                    session,
                    actor=actor,
                    action="token.create",
                    entity_type="token",
                    entity_id=name,
                    before=None,
                    after={"name": name, "role": role, "expires_at": _iso(record.expires_at), "cities": scope},
                )
                out = TokenOut.model_validate(record)
        except IntegrityError as exc:
            raise ConflictError(f"an API token named {name!r} already exists", token=name) from exc
        return out, token

    # Recording every request's time would be one write per request; a minute's precision is enough to tell an
    # unused token from a used one.
    LAST_USED_PRECISION_S = 60.0

    def authenticate(self, token: str) -> TokenOut | None:
        """The live token that `token` is, or None (unknown, revoked or expired). Records when it was last used."""
        now = utcnow()
        with self._sessions() as session:
            record = session.scalars(
                select(ApiToken).where(ApiToken.token_hash == hash_api_token(token), ApiToken.revoked_at.is_(None))
            ).one_or_none()
            if record is None or (record.expires_at is not None and record.expires_at <= now):
                return None
            last = record.last_used_at
            if last is None or (now - last).total_seconds() >= self.LAST_USED_PRECISION_S:
                session.execute(update(ApiToken).where(ApiToken.id == record.id).values(last_used_at=now))
                session.commit()
                record.last_used_at = now
            return TokenOut.model_validate(record)

    def list_tokens(self) -> list[TokenOut]:
        with self._sessions() as session:
            return [TokenOut.model_validate(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.name))]

    def revoke_token(self, name: str, *, actor: str) -> TokenOut:
        with self._transaction() as session:
            record = session.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
            if record is None:
                raise TokenNotFoundError(name)
            if record.revoked_at is None:
                record.revoked_at = utcnow()
                self._audit(
                    session,
                    actor=actor,
                    action="token.revoke",
                    entity_type="token",
                    entity_id=name,
                    before={"name": name, "role": record.role, "revoked_at": None},
                    after={"name": name, "role": record.role, "revoked_at": record.revoked_at.isoformat()},
                )
            return TokenOut.model_validate(record)

    # ------------------------------------------------------------------ audit

    def record_audit(
        self,
        *,
        actor: str,
        action: str,
        entity_type: str,
        entity_id: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """For changes made outside the registry tables (e.g. the broker's collector account)."""
        with self._transaction() as session:
            self._audit(
                session,
                actor=actor,
                action=action,
                entity_type=entity_type,
                entity_id=entity_id,
                before=before,
                after=after,
            )

    def list_audit(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[AuditOut]:
        conditions = _equal(AuditEntry, entity_type=entity_type, entity_id=entity_id, actor=actor, action=action)
        if since is not None:
            conditions.append(AuditEntry.at >= since)
        if until is not None:
            conditions.append(AuditEntry.at < until)
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions)) or 0
            rows = session.scalars(
                select(AuditEntry)
                .where(*conditions)
                .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return Page[AuditOut](
                total=total, limit=limit, offset=offset, items=[AuditOut.model_validate(r) for r in rows]
            )

    # ------------------------------------------------------------------ recent raw messages, diagnostics

    def record_recent_messages(self, batch: Mapping[str, Sequence[RecentMessage]]) -> None:
        """Append each device's messages and keep only its newest 20 (one insert + one trim per 500 devices)."""
        rows: list[dict[str, Any]] = []
        for device_id, messages in batch.items():
            for message in list(messages)[-RECENT_MESSAGES_KEPT:]:
                rows.append(
                    {
                        "device_id": device_id[:200],
                        "received_at": _ns_to_datetime(message.time_ns),
                        "topic": message.topic[:1024],
                        "payload": _payload_text(message.payload),
                        "accepted": message.accepted,
                        "reason": (message.reason or None) and str(message.reason)[:200],
                    }
                )
        if not rows:
            return
        table = DeviceRecentMessage
        with self._transaction() as session:
            # Core insert (not the ORM's bulk path): this runs every few seconds with up to 20 rows per device
            session.execute(insert(DeviceRecentMessage.__table__), rows)  # type: ignore[arg-type]
            device_ids = sorted({r["device_id"] for r in rows})
            for chunk in _chunks(device_ids):
                rank = (
                    func.row_number()
                    .over(partition_by=table.device_id, order_by=(table.received_at.desc(), table.id.desc()))
                    .label("rank")
                )
                ranked = select(table.id, rank).where(table.device_id.in_(chunk)).subquery()
                stale = select(ranked.c.id).where(ranked.c.rank > RECENT_MESSAGES_KEPT)
                session.execute(delete(table).where(table.id.in_(stale)).execution_options(synchronize_session=False))

    def recent_messages(self, device_id: str, limit: int = RECENT_MESSAGES_KEPT) -> list[RecentMessageOut]:
        table = DeviceRecentMessage
        with self._sessions() as session:
            rows = session.scalars(
                select(table)
                .where(table.device_id == device_id)
                .order_by(table.received_at.desc(), table.id.desc())
                .limit(limit)
            ).all()
            return [RecentMessageOut.model_validate(r) for r in rows]

    def diagnostics(self, device_id: str) -> DiagnosticsOut:
        device = self.get_device(device_id)
        messages = self.recent_messages(device_id)
        last_accepted = next((m for m in messages if m.accepted), None)
        last_reading: Any = None
        if last_accepted is not None:
            try:
                last_reading = json.loads(last_accepted.payload)
            except ValueError:
                last_reading = last_accepted.payload
        return DiagnosticsOut(
            device=device,
            last_seen=messages[0].received_at if messages else None,
            last_reading_at=last_accepted.received_at if last_accepted else None,
            last_reading=last_reading,
            recent_messages=messages,
        )

    # ------------------------------------------------------------------ the collectors' view

    def change_marker(self) -> tuple[Any, ...]:
        """A cheap fingerprint of everything `device_infos()` reads: if it is unchanged, nothing is to reload."""
        with self._sessions() as session:
            devices = session.execute(select(func.count(), func.max(Device.updated_at))).one()
            profiles = session.execute(select(func.count(), func.max(DeviceProfile.updated_at))).one()
            overrides = session.execute(select(func.count(), func.max(DeviceOverride.updated_at))).one()
            return (*devices, *profiles, *overrides)

    def device_infos(self) -> list[DeviceInfo]:
        """Every device as the collectors and rules see it: profile defaults with the device's overrides on top."""
        with self._sessions() as session:
            profiles = {p.name: p for p in session.scalars(select(DeviceProfile))}
            overrides = {o.device_id: o for o in session.scalars(select(DeviceOverride))}
            infos = []
            for device in session.scalars(select(Device)):
                profile = profiles.get(device.profile) if device.profile else None
                override = overrides.get(device.device_id)
                thresholds: dict[str, float] = {}
                if profile is not None:
                    thresholds.update(profile.default_thresholds)
                if override is not None:
                    thresholds.update(override.thresholds)
                until = device.maintenance_until
                infos.append(
                    DeviceInfo(
                        device_id=device.device_id,
                        feed=device.feed,
                        city=device.city,
                        district=device.district,
                        name=device.name,
                        lat=device.lat,
                        lon=device.lon,
                        dev_eui=device.dev_eui,
                        profile=device.profile,
                        status=device.status,
                        site=dict(device.site),
                        thresholds=thresholds,
                        calibration={k: dict(v) for k, v in (override.calibration if override else {}).items()},
                        heartbeat_s=device.heartbeat_s or (profile.heartbeat_s if profile else None),
                        maintenance_until_ns=int(until.timestamp() * 1_000_000_000) if until else None,
                        mapping=profile.field_mapping if profile is not None else None,
                    )
                )
            return infos


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # WAL lets the API write while the collectors' directory reads; harmless (ignored) for in-memory databases.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
