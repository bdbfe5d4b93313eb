"""The collectors' and rules' view of the registry: every device as a `DeviceInfo`, the profile's defaults with
the device's overrides on top, and a cheap fingerprint that says whether it is worth reading again."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from core.model import DeviceInfo
from gateway.registry.database import RegistryDatabase
from gateway.registry.models import Device, DeviceOverride, DeviceProfile


class CollectorsView:
    def __init__(self, db: RegistryDatabase) -> None:
        self.db = db

    def change_marker(self) -> tuple[Any, ...]:
        """A cheap fingerprint of everything `device_infos()` reads: if it is unchanged, nothing is to reload."""
        with self.db.sessions() as session:
            devices = session.execute(select(func.count(), func.max(Device.updated_at))).one()
            profiles = session.execute(select(func.count(), func.max(DeviceProfile.updated_at))).one()
            overrides = session.execute(select(func.count(), func.max(DeviceOverride.updated_at))).one()
            return (*devices, *profiles, *overrides)

    def device_infos(self) -> list[DeviceInfo]:
        """Every device as the collectors and rules see it: profile defaults with the device's overrides on top.
        The mapping the collectors apply is the device's profile: a profile is named after its mapping."""
        with self.db.sessions() as session:
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
                        mapping=profile.name if profile is not None else None,
                    )
                )
            return infos
