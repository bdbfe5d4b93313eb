"""City display names (Thai, English) for the messages people read: alerts say "แหลมฉบัง", not `laem-chabang`."""

from __future__ import annotations

from sqlalchemy import select

from core.db import utcnow
from gateway.errors import FieldProblem, InvalidInputError
from gateway.registry.audit import audit_in
from gateway.registry.database import RegistryDatabase
from gateway.registry.models import CityName


class CityNames:
    def __init__(self, db: RegistryDatabase) -> None:
        self.db = db

    def set(self, slug: str, name_th: str, name_en: str, *, actor: str) -> None:
        """The city's display names (Thai, English); audited."""
        if not slug or not (name_th.strip() or name_en.strip()):
            raise InvalidInputError([FieldProblem("name_th", "give the city's Thai and/or English name")])
        with self.db.transaction() as session:
            row = session.get(CityName, slug)
            before = {"name_th": row.name_th, "name_en": row.name_en} if row is not None else None
            if row is None:
                row = CityName(slug=slug)
                session.add(row)
            row.name_th, row.name_en, row.updated_at = name_th.strip(), name_en.strip(), utcnow()
            after = {"name_th": row.name_th, "name_en": row.name_en}
            audit_in(
                session, actor=actor, action="city.name", entity_type="city", entity_id=slug, before=before, after=after
            )

    def all(self) -> dict[str, tuple[str, str]]:
        """slug -> (Thai name, English name) of every named city."""
        with self.db.sessions() as session:
            return {r.slug: (r.name_th, r.name_en) for r in session.scalars(select(CityName))}
