"""The device registry: SQLAlchemy models, the store, CSV import and the collectors' in-memory directory."""

from collectors.model import RecentMessage
from gateway.registry.csv_import import ParsedCsv, parse_device_csv
from gateway.registry.directory import RegistryDirectory
from gateway.registry.store import RegistryStore

__all__ = ["ParsedCsv", "RecentMessage", "RegistryDirectory", "RegistryStore", "parse_device_csv"]
