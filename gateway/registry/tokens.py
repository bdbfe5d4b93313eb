"""API tokens: created once (the token itself is shown once, only its hash is kept), checked, revoked."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from core.db import utcnow
from gateway.errors import ConflictError, FieldProblem, InvalidInputError, TokenNotFoundError
from gateway.registry.audit import audit_in
from gateway.registry.database import RegistryDatabase, iso
from gateway.registry.models import ApiToken
from gateway.registry.schemas import ROLES, TokenOut
from gateway.secrets import hash_api_token, new_api_token


class TokenStore:
    # Recording every request's time would be one write per request; a minute's precision is enough to tell an
    # unused token from a used one.
    LAST_USED_PRECISION_S = 60.0

    def __init__(self, db: RegistryDatabase) -> None:
        self.db = db

    def create(
        self,
        name: str,
        role: str,
        *,
        actor: str,
        expires_at: datetime | None = None,
        cities: Sequence[str] | None = None,
    ) -> tuple[TokenOut, str]:
        """Returns the token record and the token itself, which is never stored and cannot be shown again.
        `expires_at`: refused from then on; `cities`: limited to those cities' devices, alerts and silences."""
        if role not in ROLES:
            raise InvalidInputError([FieldProblem("role", f"must be one of {', '.join(ROLES)}", value=role)])
        if expires_at is not None and (expires_at.tzinfo is None or expires_at.utcoffset() is None):
            raise InvalidInputError([FieldProblem("expires_at", "give a UTC offset, e.g. 2027-01-01T00:00:00+07:00")])
        scope = sorted(set(cities)) if cities else None
        token = new_api_token()
        try:
            with self.db.transaction() as session:
                if session.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none() is not None:
                    raise ConflictError(f"an API token named {name!r} already exists", token=name)
                record = ApiToken(
                    name=name,
                    role=role,
                    token_hash=hash_api_token(token),
                    created_at=utcnow(),
                    expires_at=expires_at.astimezone(UTC) if expires_at else None,
                    cities=scope,
                )
                session.add(record)
                session.flush()
                audit_in(
                    session,
                    actor=actor,
                    action="token.create",
                    entity_type="token",
                    entity_id=name,
                    before=None,
                    after={"name": name, "role": role, "expires_at": iso(record.expires_at), "cities": scope},
                )
                out = TokenOut.model_validate(record)
        except IntegrityError as exc:
            raise ConflictError(f"an API token named {name!r} already exists", token=name) from exc
        return out, token

    def authenticate(self, token: str) -> TokenOut | None:
        """The live token that `token` is, or None (unknown, revoked or expired). Records when it was last used."""
        now = utcnow()
        with self.db.sessions() as session:
            record = session.scalars(
                select(ApiToken).where(ApiToken.token_hash == hash_api_token(token), ApiToken.revoked_at.is_(None))
            ).one_or_none()
            if record is None or (record.expires_at is not None and record.expires_at <= now):
                return None
            last = record.last_used_at
            if last is None or (now - last).total_seconds() >= self.LAST_USED_PRECISION_S:
                session.execute(update(ApiToken).where(ApiToken.id == record.id).values(last_used_at=now))
                session.commit()
                record.last_used_at = now
            return TokenOut.model_validate(record)

    def all(self) -> list[TokenOut]:
        with self.db.sessions() as session:
            return [TokenOut.model_validate(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.name))]

    def revoke(self, name: str, *, actor: str) -> TokenOut:
        with self.db.transaction() as session:
            record = session.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
            if record is None:
                raise TokenNotFoundError(name)
            if record.revoked_at is None:
                record.revoked_at = utcnow()
                audit_in(
                    session,
                    actor=actor,
                    action="token.revoke",
                    entity_type="token",
                    entity_id=name,
                    before={"name": name, "role": record.role, "revoked_at": None},
                    after={"name": name, "role": record.role, "revoked_at": record.revoked_at.isoformat()},
                )
            return TokenOut.model_validate(record)
