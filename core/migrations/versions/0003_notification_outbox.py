"""notification outbox: messages owed to receivers, resumed after a restart

Revision ID: 0003_notification_outbox
Revises: 0002_rules
Create Date: 2026-12-01

A message is written here (state `owed`) in the same transaction as its notification-log rows, before the first
attempt, and marked `sent` only after the receiver accepted it (rules/notify/outbox.py). On start every `owed`
row is resumed, oldest first. Like 0002, a table an `AlertStore` already made on a bare database is adopted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_notification_outbox"
down_revision: str | Sequence[str] | None = "0003_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("rules_notification_outbox"):
        return  # made by an `AlertStore` on a bare database before it came under Alembic: adopted
    op.create_table(
        "rules_notification_outbox",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("receiver", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("group_key", sa.String(length=400), nullable=False),
        sa.Column("alert_ids", sa.JSON(), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("fallback", sa.String(length=120), nullable=True),
        sa.Column("fallback_after_s", sa.Float(), nullable=True),
        sa.Column("escalated", sa.Integer(), nullable=False),
        sa.Column("first_failure_ns", sa.BigInteger(), nullable=True),
        sa.Column("next_attempt_ns", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sa.String(length=32), nullable=True),
        sa.Column("lease_until_ns", sa.BigInteger(), nullable=True),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_notification_outbox")),
    )
    op.create_index(
        "ix_rules_notification_outbox_owed",
        "rules_notification_outbox",
        ["state", "receiver", "created_ns"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("rules_notification_outbox")
