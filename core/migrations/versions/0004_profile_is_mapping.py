"""a device profile is named after its mapping profile: drop device_profiles.field_mapping

The collectors applied the YAML mapping named by `field_mapping`, which the start-up sync always set to the
profile's own name. From this revision on the mapping is the profile's name, so a profile whose
`field_mapping` named another mapping would silently change what its devices' payloads mean: the upgrade
refuses, naming those profiles, rather than guess.

Revision ID: 0004_profile_is_mapping
Revises: 0003_city_names
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_profile_is_mapping"
down_revision: str | Sequence[str] | None = "0003_city_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class ProfileMappingMismatchError(RuntimeError):
    """Profiles whose mapping is not the one of their own name: the upgrade cannot keep their meaning."""


def upgrade() -> None:
    connection = op.get_bind()
    mismatched = connection.execute(
        sa.text(
            "SELECT name, field_mapping FROM device_profiles "
            "WHERE field_mapping IS NOT NULL AND field_mapping <> name ORDER BY name"
        )
    ).all()
    if mismatched:
        listed = ", ".join(f"{name!r} (mapping {mapping!r})" for name, mapping in mismatched)
        raise ProfileMappingMismatchError(
            f"device profiles {listed} apply a mapping of another name; a profile is now named after its mapping: "
            "with the previous version, move their devices to the profile named like the mapping, then upgrade"
        )
    if connection.dialect.name == "sqlite":
        # SQLite (>= 3.35) drops a plain column in place; the batch path would recreate the table, and dropping
        # the old one runs the devices' ON DELETE RESTRICT against every profile in use.
        op.execute("ALTER TABLE device_profiles DROP COLUMN field_mapping")
    else:
        op.drop_column("device_profiles", "field_mapping")


def downgrade() -> None:
    op.add_column("device_profiles", sa.Column("field_mapping", sa.String(length=64), nullable=True))
    op.execute("UPDATE device_profiles SET field_mapping = name")  # what the start-up sync wrote
