"""`RegistryStore`: the registry's database and its aggregate stores, built together on one engine.

Each aggregate is its own small store; callers use them directly (`store.devices.create(...)`,
`store.tokens.authenticate(...)`). Every change writes its audit entry in the same transaction.
The collectors never query this per message: they read `RegistryDirectory`, an in-memory copy of `store.view`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy import Engine

from gateway.registry.audit import AuditLog
from gateway.registry.cities import CityNames
from gateway.registry.collectors_view import CollectorsView
from gateway.registry.database import MIGRATIONS_DIR, RegistryDatabase
from gateway.registry.device_import import DeviceImport
from gateway.registry.devices import DeviceStore
from gateway.registry.overrides import OverrideStore
from gateway.registry.profiles import ProfileStore
from gateway.registry.recent import RecentMessage, RecentMessages
from gateway.registry.tokens import TokenStore


class RegistryStore:
    """`mapping_profiles`: name -> feed of the mapping profiles this process loaded (shipped and
    `[domain] profiles_dir`); only those can have a registry profile (see `gateway.registry.profiles`)."""

    def __init__(self, url: str, *, echo: bool = False, mapping_profiles: Mapping[str, str] | None = None) -> None:
        self.db = RegistryDatabase(url, echo=echo)
        self.audit = AuditLog(self.db)
        self.devices = DeviceStore(self.db)
        self.imports = DeviceImport(self.db)
        self.profiles = ProfileStore(self.db, mapping_profiles)
        self.overrides = OverrideStore(self.db)
        self.tokens = TokenStore(self.db)
        self.cities = CityNames(self.db)
        self.recent = RecentMessages(self.db, self.devices)
        self.view = CollectorsView(self.db)

    @classmethod
    def for_data_dir(cls, data_dir: str | Path, *, mapping_profiles: Mapping[str, str] | None = None) -> RegistryStore:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path / 'registry.db'}", mapping_profiles=mapping_profiles)

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def engine(self) -> Engine:
        return self.db.engine

    def migrate(self, *, extra_version_locations: Sequence[str] = ()) -> None:
        self.db.migrate(extra_version_locations=extra_version_locations)

    def ping(self) -> None:
        self.db.ping()

    def close(self) -> None:
        self.db.close()


__all__ = ["MIGRATIONS_DIR", "RecentMessage", "RegistryStore"]
