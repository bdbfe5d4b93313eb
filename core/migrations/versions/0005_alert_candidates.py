"""alert candidates: pending alerts not shown yet, one narrow row per (rule, device)

Revision ID: 0005_alert_candidates
Revises: 0004_profile_is_mapping
Create Date: 2026-12-03

A rule's condition that holds is first a candidate (rules/store.py `AlertCandidate`): written and deleted with
its readings' batch, it becomes a pending alert in `rules_alerts` only once it held for the rules'
`show_pending_after_s`, or fires at its `for:`. Like 0002, a table an `AlertStore` already made on a bare
database is adopted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_alert_candidates"
down_revision: str | Sequence[str] | None = "0004_profile_is_mapping"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("rules_alert_candidates"):
        return  # made by an `AlertStore` on a bare database before it came under Alembic: adopted
    op.create_table(
        "rules_alert_candidates",
        sa.Column("rule", sa.String(length=120), nullable=False),
        sa.Column("device_id", sa.String(length=120), nullable=False),
        sa.Column("since_ns", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("rule", "device_id", name=op.f("pk_rules_alert_candidates")),
    )


def downgrade() -> None:
    op.drop_table("rules_alert_candidates")
