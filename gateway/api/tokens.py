"""/api/v1/tokens: API tokens (admin only; a token is shown once, when it is created)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from gateway.api.auth import Principal
from gateway.api.deps import ADMIN, NameParam, registry
from gateway.registry.schemas import TokenOut, TokenSpec

router = APIRouter(tags=["tokens"])


class TokenCreatedOut(BaseModel):
    token: TokenOut
    secret: str
    note: str = "Store this token now: it is shown only once."
    note_th: str = "โปรดบันทึกโทเค็นนี้ทันที ระบบจะแสดงเพียงครั้งเดียว"


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(request: Request, who: Annotated[Principal, Depends(ADMIN)]) -> list[TokenOut]:
    who.require_unscoped("API tokens")
    return registry(request).tokens.all()


@router.post("/tokens", status_code=201, response_model=TokenCreatedOut)
def create_token(spec: TokenSpec, request: Request, who: Annotated[Principal, Depends(ADMIN)]) -> TokenCreatedOut:
    who.require_unscoped("API tokens")
    token, secret = registry(request).tokens.create(
        spec.name, spec.role, actor=who.actor, expires_at=spec.expires_at, cities=spec.cities
    )
    return TokenCreatedOut(token=token, secret=secret)


@router.delete("/tokens/{name}", response_model=TokenOut)
def revoke_token(name: NameParam, request: Request, who: Annotated[Principal, Depends(ADMIN)]) -> TokenOut:
    who.require_unscoped("API tokens")
    return registry(request).tokens.revoke(name, actor=who.actor)
