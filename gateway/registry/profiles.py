"""Device profiles: the registry's settings for a mapping profile, under the mapping profile's name.

A profile is one thing: a kind of device, defined by its YAML mapping profile (`collectors/mapping/profiles/`
or `[domain] profiles_dir`), which says how its vendor fields map to a feed's canonical ones. The registry keeps,
under the same name, what operators tune for that kind of device: the fields it is expected to send, default
thresholds, its heartbeat. So a registry profile can only be created for a mapping profile this process has
loaded (`mapping_profiles`: name -> feed, supplied by the app shell), for that mapping profile's feed; a device's
`profile` names one, and the collectors apply the mapping of that name.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import utcnow
from gateway.errors import ConflictError, FieldProblem, InvalidInputError, ProfileNotFoundError
from gateway.registry.audit import audit_in
from gateway.registry.database import RegistryDatabase, snapshot
from gateway.registry.models import Device, DeviceProfile
from gateway.registry.schemas import ProfileOut, ProfilePatch, ProfileSpec, check_expected_fields

PROFILE_COLUMNS = tuple(c.key for c in DeviceProfile.__table__.columns)
# What a PATCH that sets a key to null leaves: the column's empty value.
_EMPTY = {"expected_fields": list, "default_thresholds": dict, "description": str}


def profile_problem(
    name: str | None, feed: str, registered: Mapping[str, str], *, row: int | None = None
) -> FieldProblem | None:
    """Why a device of `feed` may not name profile `name`, given the registry's profiles (name -> feed)."""
    if name is None:
        return None
    found = registered.get(name)
    if found is None:
        return FieldProblem("profile", f"device profile {name!r} does not exist", row=row)
    if found != feed:
        return FieldProblem("profile", f"profile {name!r} is for feed {found!r}, not {feed!r}", row=row)
    return None


def check_device_profile_in(session: Session, name: str | None, feed: str) -> None:
    """In the caller's transaction: the device's profile exists and is for the device's feed."""
    if name is None:
        return
    found = session.get(DeviceProfile, name)
    problem = profile_problem(name, feed, {name: found.feed} if found is not None else {})
    if problem is not None:
        raise InvalidInputError([problem])


def registered_profiles_in(session: Session) -> dict[str, str]:
    """name -> feed of every registry profile."""
    return {name: feed for name, feed in session.execute(select(DeviceProfile.name, DeviceProfile.feed))}


class ProfileStore:
    def __init__(self, db: RegistryDatabase, mapping_profiles: Mapping[str, str] | None = None) -> None:
        self.db = db
        # name -> feed of the mapping profiles loaded in this process; none loaded: no profile can be created.
        self.mapping_profiles: Mapping[str, str] = dict(mapping_profiles or {})

    def _check_mapping_profile(self, spec: ProfileSpec) -> None:
        feed = self.mapping_profiles.get(spec.name)
        if feed is None:
            loaded = ", ".join(sorted(self.mapping_profiles)) or "none"
            raise InvalidInputError(
                [
                    FieldProblem(
                        "name",
                        f"no mapping profile named {spec.name!r} is loaded (shipped or [domain] profiles_dir); "
                        f"a device profile is a mapping profile's settings; loaded: {loaded}",
                        value=spec.name,
                    )
                ]
            )
        if feed != spec.feed:
            raise InvalidInputError(
                [FieldProblem("feed", f"mapping profile {spec.name!r} is for feed {feed!r}", value=spec.feed)]
            )

    def create(self, spec: ProfileSpec, *, actor: str) -> ProfileOut:
        self._check_mapping_profile(spec)
        with self.db.transaction() as session:
            if session.get(DeviceProfile, spec.name) is not None:
                raise ConflictError(f"device profile {spec.name!r} already exists", profile=spec.name)
            now = utcnow()
            profile = DeviceProfile(**spec.model_dump(), created_at=now, updated_at=now)
            session.add(profile)
            session.flush()
            audit_in(
                session,
                actor=actor,
                action="profile.create",
                entity_type="profile",
                entity_id=spec.name,
                before=None,
                after=snapshot(profile, PROFILE_COLUMNS),
            )
            out = ProfileOut.model_validate(profile)
        self.db.changed()
        return out

    def ensure(self, specs: list[ProfileSpec], *, actor: str) -> list[str]:
        """Create the rows of profiles loaded from YAML (shipped or `[domain] profiles_dir`) that the registry does
        not have yet, so a device can name any loaded profile without a prior API call. Existing rows are left
        as they are (operators tune them through the API); one of another feed is a `ConflictError`.
        Returns the names created."""
        with self.db.sessions() as session:
            existing = registered_profiles_in(session)
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
                self.create(spec, actor=actor)
            except ConflictError:  # another process created it meanwhile
                continue
            created.append(spec.name)
        return created

    def get(self, name: str) -> ProfileOut:
        with self.db.sessions() as session:
            profile = session.get(DeviceProfile, name)
            if profile is None:
                raise ProfileNotFoundError(name)
            return ProfileOut.model_validate(profile)

    def all(self) -> list[ProfileOut]:
        with self.db.sessions() as session:
            return [
                ProfileOut.model_validate(p)
                for p in session.scalars(select(DeviceProfile).order_by(DeviceProfile.name))
            ]

    def update(self, name: str, patch: ProfilePatch, *, actor: str) -> ProfileOut:
        changes = patch.model_dump(exclude_unset=True)
        with self.db.transaction() as session:
            profile = session.get(DeviceProfile, name)
            if profile is None:
                raise ProfileNotFoundError(name)
            if changes.get("expected_fields") is not None:
                try:
                    check_expected_fields(profile.feed, changes["expected_fields"])
                except ValueError as exc:
                    raise InvalidInputError([FieldProblem("expected_fields", str(exc))]) from exc
            for key, empty in _EMPTY.items():
                if key in changes and changes[key] is None:
                    changes[key] = empty()
            before = snapshot(profile, PROFILE_COLUMNS)
            for key, value in changes.items():
                setattr(profile, key, value)
            profile.updated_at = utcnow()
            session.flush()
            audit_in(
                session,
                actor=actor,
                action="profile.update",
                entity_type="profile",
                entity_id=name,
                before=before,
                after=snapshot(profile, PROFILE_COLUMNS),
            )
            out = ProfileOut.model_validate(profile)
        self.db.changed()
        return out

    def delete(self, name: str, *, actor: str) -> None:
        with self.db.transaction() as session:
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
            before = snapshot(profile, PROFILE_COLUMNS)
            session.delete(profile)
            audit_in(
                session,
                actor=actor,
                action="profile.delete",
                entity_type="profile",
                entity_id=name,
                before=before,
                after=None,
            )
        self.db.changed()
