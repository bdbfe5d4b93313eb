"""security: namespaced device accounts, token expiry, last use and city scope

Revision ID: 0003_security
Revises: 0002_rules
Create Date: 2026-12-01

Device MQTT usernames are now `device.<device_id>` (up to 71 characters), so the column widens. API tokens get
an optional expiry, the time they were last used and an optional list of cities they are limited to
(NULL: every city).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0003_security"
down_revision: str | Sequence[str] | None = "0002_rules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not enforce VARCHAR lengths
        op.alter_column("devices", "mqtt_username", type_=sa.String(length=80), existing_type=sa.String(length=64))
    op.add_column("api_tokens", sa.Column("expires_at", core.db.UtcDateTime(timezone=True), nullable=True))
    op.add_column("api_tokens", sa.Column("last_used_at", core.db.UtcDateTime(timezone=True), nullable=True))
    op.add_column("api_tokens", sa.Column("cities", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("cities")
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
