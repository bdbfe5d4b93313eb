"""The device registry: SQLAlchemy models, one small store per aggregate (devices, CSV import, profiles,
overrides, tokens, audit, city names, recent messages, the collectors' view) built together by `RegistryStore`,
and the collectors' in-memory directory."""

from core.model import RecentMessage
from gateway.registry.csv_import import ParsedCsv, parse_device_csv
from gateway.registry.directory import RegistryDirectory
from gateway.registry.store import RegistryStore

__all__ = ["ParsedCsv", "RecentMessage", "RegistryDirectory", "RegistryStore", "parse_device_csv"]
