"""Registry tables (SQLAlchemy 2 declarative). Every timestamp is UTC (`UtcDateTime`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, utcnow

ID_LENGTH = 64
TEXT_LENGTH = 200


class DeviceProfile(Base):
    """The registry's settings for the mapping profile of the same name (see `gateway.registry.profiles`): the
    fields such a device is expected to send, default thresholds, heartbeat. The mapping itself is the YAML's."""

    __tablename__ = "device_profiles"

    name: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    feed: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(TEXT_LENGTH), default="")
    expected_fields: Mapped[list[str]] = mapped_column(default=list)
    default_thresholds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    heartbeat_s: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Device(Base):
    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    feed: Mapped[str] = mapped_column(String(16), index=True)
    city: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    district: Mapped[str] = mapped_column(String(TEXT_LENGTH), index=True)
    name: Mapped[str] = mapped_column(String(TEXT_LENGTH), default="")
    lat: Mapped[float | None] = mapped_column(default=None)
    lon: Mapped[float | None] = mapped_column(default=None)
    dev_eui: Mapped[str | None] = mapped_column(String(16), unique=True, default=None)
    profile: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("device_profiles.name", ondelete="RESTRICT"), default=None, index=True
    )
    site: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    heartbeat_s: Mapped[int | None] = mapped_column(Integer, default=None)
    maintenance_until: Mapped[datetime | None] = mapped_column(default=None)
    # `device.<device_id>`: 71 characters at most. SQLite ignores VARCHAR lengths (and widening it there would
    # mean recreating the table, whose DROP cascades to the overrides), so only PostgreSQL's column widens.
    mqtt_username: Mapped[str | None] = mapped_column(
        String(ID_LENGTH).with_variant(String(80), "postgresql"), default=None
    )
    mqtt_password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class DeviceOverride(Base):
    """Per-device rule thresholds and calibration ({field: {offset, scale}}), layered over the profile."""

    __tablename__ = "device_overrides"

    device_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("devices.device_id", ondelete="CASCADE"), primary_key=True
    )
    thresholds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    calibration: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ApiToken(Base):
    """A bearer token for the HTTP API. Only the SHA-256 of the token is kept (tokens are 256-bit random)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    cities: Mapped[list[str] | None] = mapped_column(default=None)  # None: every city


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(TEXT_LENGTH))
    action: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(TEXT_LENGTH))
    before: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class DeviceRecentMessage(Base):
    """The last few raw messages of a device, for diagnostics. Not a foreign key: unknown devices are recorded too."""

    __tablename__ = "device_recent_messages"
    __table_args__ = (Index("ix_device_recent_messages_device_time", "device_id", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(TEXT_LENGTH))
    received_at: Mapped[datetime] = mapped_column()
    topic: Mapped[str] = mapped_column(String(1024))
    payload: Mapped[str] = mapped_column(Text)
    accepted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(TEXT_LENGTH), default=None)


__all__ = ["ApiToken", "AuditEntry", "Device", "DeviceOverride", "DeviceProfile", "DeviceRecentMessage"]


class CityName(Base):
    """How people call a city: its Thai and English display names (alerts say "แหลมฉบัง", not `laem-chabang`)."""

    __tablename__ = "city_names"

    slug: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name_th: Mapped[str] = mapped_column(String(TEXT_LENGTH), default="")
    name_en: Mapped[str] = mapped_column(String(TEXT_LENGTH), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
