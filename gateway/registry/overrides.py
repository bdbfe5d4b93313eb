"""Per-device overrides: rule thresholds and calibration ({field: {offset, scale}}), layered over the profile."""

from __future__ import annotations

from core.db import utcnow
from core.feeds import FEED_SPECS
from gateway.errors import FieldProblem, InvalidInputError
from gateway.registry.audit import audit_in
from gateway.registry.database import RegistryDatabase
from gateway.registry.devices import load_device_in
from gateway.registry.models import DeviceOverride
from gateway.registry.schemas import OverridesOut, OverridesSpec


class OverrideStore:
    def __init__(self, db: RegistryDatabase) -> None:
        self.db = db

    def get(self, device_id: str) -> OverridesOut:
        with self.db.sessions() as session:
            load_device_in(session, device_id)
            override = session.get(DeviceOverride, device_id)
            if override is None:
                return OverridesOut(device_id=device_id, thresholds={}, calibration={})
            return OverridesOut.model_validate(override)

    def set(self, device_id: str, spec: OverridesSpec, *, actor: str) -> OverridesOut:
        """Replace the device's overrides (thresholds and calibration) as a whole."""
        with self.db.transaction() as session:
            device = load_device_in(session, device_id, for_update=True)
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
            audit_in(
                session,
                actor=actor,
                action="device.overrides",
                entity_type="device",
                entity_id=device_id,
                before=before,
                after={"thresholds": override.thresholds, "calibration": override.calibration},
            )
            out = OverridesOut.model_validate(override)
        self.db.changed()
        return out
