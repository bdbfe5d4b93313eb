"""The gateway's HTTP API (FastAPI)."""

from gateway.api.app import create_app
from gateway.api.auth import Principal, require_role

__all__ = ["Principal", "create_app", "require_role"]
