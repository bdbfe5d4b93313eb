"""Devices: register, read, change, retire; credentials and maintenance. Every change is audited in its own
transaction, and the change listeners (the collectors' directory) hear of it after the commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import utcnow
from core.feeds import FEED_SPECS
from gateway.errors import ConflictError, DeviceNotFoundError, FieldProblem, InvalidInputError
from gateway.registry.audit import audit_in
from gateway.registry.database import RegistryDatabase, chunks, equal_to, snapshot
from gateway.registry.models import Device, DeviceOverride
from gateway.registry.profiles import check_device_profile_in
from gateway.registry.schemas import DeviceOut, DevicePatch, DeviceSpec, Page, topic_for

DEVICE_COLUMNS = tuple(c.key for c in Device.__table__.columns)


def device_out(device: Device, now: datetime | None = None) -> DeviceOut:
    now = now or utcnow()
    out = DeviceOut.model_validate(device)
    out.in_maintenance = device.maintenance_until is not None and device.maintenance_until > now
    out.has_mqtt_credentials = device.mqtt_password_hash is not None
    out.topic = topic_for(device.city, device.feed, device.device_id)
    return out


def load_device_in(session: Session, device_id: str, *, for_update: bool = False) -> Device:
    query = select(Device).where(Device.device_id == device_id)
    if for_update:
        query = query.with_for_update()
    device = session.scalars(query).one_or_none()
    if device is None:
        raise DeviceNotFoundError(device_id)
    return device


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


def _check_calibration_fits_feed(session: Session, device_id: str, feed: str) -> None:
    """A device may move to `feed` only if its calibration overrides name fields of that feed."""
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


class DeviceStore:
    def __init__(self, db: RegistryDatabase) -> None:
        self.db = db

    def create(
        self,
        spec: DeviceSpec,
        *,
        actor: str,
        mqtt_username: str | None = None,
        mqtt_password_hash: str | None = None,
    ) -> DeviceOut:
        try:
            with self.db.transaction() as session:
                if session.get(Device, spec.device_id) is not None:
                    raise ConflictError(
                        f"device {spec.device_id!r} is already registered",
                        message_th="อุปกรณ์นี้ลงทะเบียนไว้แล้ว",
                        device_id=spec.device_id,
                    )
                check_device_profile_in(session, spec.profile, spec.feed)
                _check_dev_eui_free(session, spec.dev_eui, spec.device_id)
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
                audit_in(
                    session,
                    actor=actor,
                    action="device.create",
                    entity_type="device",
                    entity_id=spec.device_id,
                    before=None,
                    after=snapshot(device, DEVICE_COLUMNS),
                )
                out = device_out(device, now)
        except IntegrityError as exc:  # a concurrent create won the race
            raise ConflictError(
                f"device {spec.device_id!r} or its DevEUI is already registered", device_id=spec.device_id
            ) from exc
        self.db.changed()
        return out

    def get(self, device_id: str) -> DeviceOut:
        with self.db.sessions() as session:
            return device_out(load_device_in(session, device_id))

    def exists(self, device_id: str) -> bool:
        with self.db.sessions() as session:
            return session.get(Device, device_id) is not None

    def cities_of(self, device_ids: Sequence[str]) -> dict[str, str]:
        """{device_id: city} of those of `device_ids` that are registered."""
        found: dict[str, str] = {}
        with self.db.sessions() as session:
            for chunk in chunks(list(device_ids)):
                for device_id, city in session.execute(
                    select(Device.device_id, Device.city).where(Device.device_id.in_(chunk))
                ):
                    found[device_id] = city
        return found

    def broker_view(self) -> list[tuple[str, str, str, str, str | None, bool]]:
        """(device_id, status, city, feed, mqtt_username, has password) of every device: what reconcile compares."""
        with self.db.sessions() as session:
            rows = session.execute(
                select(
                    Device.device_id, Device.status, Device.city, Device.feed, Device.mqtt_username,
                    Device.mqtt_password_hash.is_not(None),
                ).order_by(Device.device_id)
            ).all()
            return [(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def find(
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
        conditions = equal_to(Device, city=city, district=district, feed=feed, status=status)
        if cities is not None:
            conditions.append(Device.city.in_(list(cities)))
        with self.db.sessions() as session:
            total = session.scalar(select(func.count()).select_from(Device).where(*conditions)) or 0
            rows = session.scalars(
                select(Device).where(*conditions).order_by(Device.device_id).limit(limit).offset(offset)
            ).all()
            now = utcnow()
            return Page[DeviceOut](total=total, limit=limit, offset=offset, items=[device_out(d, now) for d in rows])

    def update(self, device_id: str, patch: DevicePatch, *, actor: str) -> tuple[DeviceOut, DeviceOut]:
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
            with self.db.transaction() as session:
                device = load_device_in(session, device_id, for_update=True)
                before_out = device_out(device)
                before = snapshot(device, DEVICE_COLUMNS)
                if "site" in changes and changes["site"] is None:
                    changes["site"] = {}
                feed = changes.get("feed", device.feed)
                profile = changes.get("profile", device.profile)
                if "feed" in changes or "profile" in changes:
                    check_device_profile_in(session, profile, feed)
                if changes.get("dev_eui"):
                    _check_dev_eui_free(session, changes["dev_eui"], device_id)
                if "feed" in changes and changes["feed"] != device.feed:
                    _check_calibration_fits_feed(session, device_id, changes["feed"])
                for key, value in changes.items():
                    setattr(device, key, value)
                if snapshot(device, DEVICE_COLUMNS) == before:
                    return before_out, before_out
                device.updated_at = utcnow()
                session.flush()
                audit_in(
                    session,
                    actor=actor,
                    action="device.update",
                    entity_type="device",
                    entity_id=device_id,
                    before=before,
                    after=snapshot(device, DEVICE_COLUMNS),
                )
                after_out = device_out(device)
        except IntegrityError as exc:
            raise ConflictError(
                f"update of device {device_id!r} conflicts with another device", device_id=device_id
            ) from exc
        self.db.changed()
        return before_out, after_out

    def _set_columns(self, device_id: str, values: dict[str, Any], *, actor: str, action: str) -> DeviceOut:
        with self.db.transaction() as session:
            device = load_device_in(session, device_id, for_update=True)
            before = snapshot(device, DEVICE_COLUMNS)
            for key, value in values.items():
                setattr(device, key, value)
            device.updated_at = utcnow()
            session.flush()
            audit_in(
                session,
                actor=actor,
                action=action,
                entity_type="device",
                entity_id=device_id,
                before=before,
                after=snapshot(device, DEVICE_COLUMNS),
            )
            out = device_out(device)
        self.db.changed()
        return out

    def set_credentials(self, device_id: str, *, mqtt_username: str, mqtt_password_hash: str, actor: str) -> DeviceOut:
        device = self.get(device_id)
        if device.status == "retired":
            raise ConflictError(
                f"device {device_id!r} is retired: it gets no credentials",
                message_th="อุปกรณ์นี้ถูกปลดระวางแล้ว",
                device_id=device_id,
            )
        return self._set_columns(
            device_id,
            {"mqtt_username": mqtt_username, "mqtt_password_hash": mqtt_password_hash},
            actor=actor,
            action="device.rotate_credentials",
        )

    def clear_credentials(self, device_id: str, *, actor: str) -> DeviceOut:
        """The broker has no account for the device any more: the registry stops saying it has one."""
        return self._set_columns(
            device_id, {"mqtt_username": None, "mqtt_password_hash": None}, actor=actor, action="device.reconcile"
        )

    def retire(self, device_id: str, *, actor: str) -> DeviceOut:
        """Mark retired and drop its credentials. Retiring a retired device changes nothing."""
        device = self.get(device_id)
        if device.status == "retired":
            return device
        return self._set_columns(
            device_id, {"status": "retired", "mqtt_password_hash": None}, actor=actor, action="device.retire"
        )

    def set_maintenance(self, device_id: str, until: datetime | None, *, actor: str) -> DeviceOut:
        """Maintenance is active while `until` is in the future: it ends by itself, no job needed."""
        if until is not None and (until.tzinfo is None or until.utcoffset() is None):
            raise InvalidInputError([FieldProblem("until", "give a UTC offset, e.g. 2026-11-22T08:00:00+07:00")])
        # Past times are accepted: they simply mean "not in maintenance" (maintenance is active iff until > now).
        return self._set_columns(
            device_id,
            {"maintenance_until": until.astimezone(UTC) if until else None},
            actor=actor,
            action="device.maintenance" if until else "device.maintenance_end",
        )
