"""API tokens: hashed, unique by name, revocable."""

from __future__ import annotations

import pytest

from gateway.errors import ConflictError
from gateway.registry import RegistryStore


def test_tokens_are_hashed_and_revocable(store: RegistryStore) -> None:
    record, token = store.tokens.create("ops-laptop", "operator", actor="cli")
    assert token.startswith("nkh_") and len(token) > 40
    authenticated = store.tokens.authenticate(token)
    assert authenticated is not None and authenticated.role == "operator"
    assert store.tokens.authenticate(token + "x") is None
    with store.engine.connect() as conn:
        from sqlalchemy import text

        stored = conn.execute(text("SELECT token_hash FROM api_tokens")).scalar_one()
    assert token not in stored
    with pytest.raises(ConflictError):
        store.tokens.create("ops-laptop", "viewer", actor="cli")
    store.tokens.revoke("ops-laptop", actor="cli")
    assert store.tokens.authenticate(token) is None
    assert record.name == "ops-laptop"
