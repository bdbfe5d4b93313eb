"""/api/v1/audit: the audit log, newest first (not for city-scoped tokens: it concerns every city)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from gateway.api.auth import Principal
from gateway.api.deps import ENGINEER, Limit, Offset, TextFilter, registry
from gateway.registry.schemas import AuditOut, Page, UtcTime

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=Page[AuditOut])
def list_audit(
    request: Request,
    who: Annotated[Principal, Depends(ENGINEER)],
    entity_type: TextFilter = None,
    entity_id: TextFilter = None,
    actor: TextFilter = None,
    action: TextFilter = None,
    since: Annotated[UtcTime | None, Query(description="from this time (with offset)")] = None,
    until: Annotated[UtcTime | None, Query(description="before this time (with offset)")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AuditOut]:
    who.require_unscoped("the audit log")
    return registry(request).audit.find(
        entity_type=entity_type,
        entity_id=entity_id,
        actor=actor,
        action=action,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
