"""/api/v1: the per-resource routers (devices, CSV import, overrides, profiles, audit, tokens) under one prefix,
every route declaring the common error responses."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api import audit, device_import, devices, overrides, profiles, tokens
from gateway.api.device_import import MAX_IMPORT_BYTES
from gateway.api.problems import COMMON_ERRORS, WRITE_ERRORS

RESOURCES = (devices, device_import, overrides, profiles, audit, tokens)


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses={**COMMON_ERRORS, **WRITE_ERRORS})
    for resource in RESOURCES:
        router.include_router(resource.router)
    return router


__all__ = ["MAX_IMPORT_BYTES", "build_router"]
