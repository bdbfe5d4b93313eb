"""rules engine tables: alerts, silences, notification log

Revision ID: 0002_rules
Revises: 0001_registry
Create Date: 2026-11-28

One open alert per (rule, device) is the UNIQUE constraint on `rules_alerts.open_key` ("rule|device_id" while
pending or firing, NULL once resolved). SQLite and PostgreSQL both treat NULLs as distinct in a UNIQUE
constraint, so any number of resolved alerts coexist while at most one row per (rule, device) is open.

Databases where an earlier `AlertStore` made these tables itself (`create_all`, before the tables joined the
registry's migrations) keep them: a table that already exists is adopted, not created again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_rules"
down_revision: str | Sequence[str] | None = "0001_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _exists(table: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if not _exists("rules_alerts"):
        op.create_table(
            "rules_alerts",
            sa.Column("id", sa.String(length=32), nullable=False),
            sa.Column("rule", sa.String(length=120), nullable=False),
            sa.Column("device_id", sa.String(length=120), nullable=False),
            sa.Column("city", sa.String(length=80), nullable=False),
            sa.Column("district", sa.String(length=80), nullable=False),
            sa.Column("feed", sa.String(length=20), nullable=False),
            sa.Column("severity", sa.String(length=10), nullable=False),
            sa.Column("state", sa.String(length=10), nullable=False),
            sa.Column("open_key", sa.String(length=250), nullable=True),
            sa.Column("value", sa.Float(), nullable=True),
            sa.Column("threshold", sa.Float(), nullable=True),
            sa.Column("message_th", sa.Text(), nullable=False),
            sa.Column("message_en", sa.Text(), nullable=False),
            sa.Column("labels", sa.JSON(), nullable=False),
            sa.Column("started_ns", sa.BigInteger(), nullable=False),
            sa.Column("fired_ns", sa.BigInteger(), nullable=True),
            sa.Column("resolved_ns", sa.BigInteger(), nullable=True),
            sa.Column("updated_ns", sa.BigInteger(), nullable=False),
            sa.Column("ack_by", sa.String(length=120), nullable=True),
            sa.Column("ack_ns", sa.BigInteger(), nullable=True),
            sa.Column("ack_comment", sa.Text(), nullable=True),
            sa.Column("flap_count", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_alerts")),
            sa.UniqueConstraint("open_key", name=op.f("uq_rules_alerts_open_key")),
        )
        op.create_index(op.f("ix_rules_alerts_rule"), "rules_alerts", ["rule"], unique=False)
        op.create_index(op.f("ix_rules_alerts_device_id"), "rules_alerts", ["device_id"], unique=False)
        op.create_index(op.f("ix_rules_alerts_state"), "rules_alerts", ["state"], unique=False)
        op.create_index("ix_rules_alerts_rule_device", "rules_alerts", ["rule", "device_id"], unique=False)

    if not _exists("rules_silences"):
        op.create_table(
            "rules_silences",
            sa.Column("id", sa.String(length=32), nullable=False),
            sa.Column("matchers", sa.JSON(), nullable=False),
            sa.Column("starts_ns", sa.BigInteger(), nullable=False),
            sa.Column("ends_ns", sa.BigInteger(), nullable=False),
            sa.Column("created_by", sa.String(length=120), nullable=False),
            sa.Column("comment", sa.Text(), nullable=False),
            sa.Column("created_ns", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_silences")),
        )
        op.create_index(op.f("ix_rules_silences_ends_ns"), "rules_silences", ["ends_ns"], unique=False)

    if not _exists("rules_notifications"):
        op.create_table(
            "rules_notifications",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("dedup_key", sa.String(length=400), nullable=False),
            sa.Column("message_id", sa.String(length=32), nullable=False),
            sa.Column("alert_id", sa.String(length=32), nullable=False),
            sa.Column("receiver", sa.String(length=120), nullable=False),
            sa.Column("group_key", sa.String(length=400), nullable=False),
            sa.Column("kind", sa.String(length=40), nullable=False),
            sa.Column("outcome", sa.String(length=20), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("created_ns", sa.BigInteger(), nullable=False),
            sa.Column("updated_ns", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_notifications")),
            sa.UniqueConstraint("dedup_key", name=op.f("uq_rules_notifications_dedup_key")),
        )
        op.create_index(op.f("ix_rules_notifications_message_id"), "rules_notifications", ["message_id"], unique=False)
        op.create_index(op.f("ix_rules_notifications_alert_id"), "rules_notifications", ["alert_id"], unique=False)
        op.create_index(op.f("ix_rules_notifications_receiver"), "rules_notifications", ["receiver"], unique=False)
        op.create_index(op.f("ix_rules_notifications_outcome"), "rules_notifications", ["outcome"], unique=False)


def downgrade() -> None:
    op.drop_table("rules_notifications")  # dropping a table drops its indexes
    op.drop_table("rules_silences")
    op.drop_table("rules_alerts")
