"""city display names (Thai, English) for the messages people read

Revision ID: 0003_city_names
Revises: 0002_rules
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.db import UtcDateTime

revision: str = "0003_city_names"
down_revision: str | Sequence[str] | None = "0003_staff_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "city_names",
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name_th", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("slug", name=op.f("pk_city_names")),
    )


def downgrade() -> None:
    op.drop_table("city_names")
