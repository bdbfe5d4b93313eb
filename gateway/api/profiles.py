"""/api/v1/profiles: the registry's settings of the loaded mapping profiles (see `gateway.registry.profiles`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from gateway.api.auth import Principal
from gateway.api.deps import ENGINEER, READ, NameParam, registry
from gateway.registry.schemas import ProfileOut, ProfilePatch, ProfileSpec

router = APIRouter(tags=["profiles"])


@router.get("/profiles", response_model=list[ProfileOut])
def list_profiles(request: Request, _who: Annotated[Principal, Depends(READ)]) -> list[ProfileOut]:
    return registry(request).profiles.all()


@router.post("/profiles", status_code=201, response_model=ProfileOut)
def create_profile(spec: ProfileSpec, request: Request, who: Annotated[Principal, Depends(ENGINEER)]) -> ProfileOut:
    """Settings for a loaded mapping profile (shipped or `[domain] profiles_dir`), under its name and feed."""
    who.require_unscoped("a device profile")
    return registry(request).profiles.create(spec, actor=who.actor)


@router.get("/profiles/{name}", response_model=ProfileOut)
def get_profile(name: NameParam, request: Request, _who: Annotated[Principal, Depends(READ)]) -> ProfileOut:
    return registry(request).profiles.get(name)


@router.patch("/profiles/{name}", response_model=ProfileOut)
def update_profile(
    name: NameParam, patch: ProfilePatch, request: Request, who: Annotated[Principal, Depends(ENGINEER)]
) -> ProfileOut:
    who.require_unscoped("a device profile")
    return registry(request).profiles.update(name, patch, actor=who.actor)


@router.delete("/profiles/{name}", status_code=204)
def delete_profile(name: NameParam, request: Request, who: Annotated[Principal, Depends(ENGINEER)]) -> Response:
    who.require_unscoped("a device profile")
    registry(request).profiles.delete(name, actor=who.actor)
    return Response(status_code=204)
