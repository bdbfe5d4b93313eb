"""`build_router`: every per-resource router mounted once under /api/v1, each operation with the declared errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.api import create_app
from gateway.api.problems import COMMON_ERRORS, WRITE_ERRORS
from gateway.broker import FakeProvisioner
from gateway.registry import RegistryStore

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def operations() -> Iterator[dict[tuple[str, str], dict[str, object]]]:
    store = RegistryStore("sqlite://")
    try:
        paths = create_app(store, FakeProvisioner()).openapi()["paths"]
        yield {(path, m): op for path, item in paths.items() for m, op in item.items() if m in METHODS}
    finally:
        store.close()


def test_every_resource_is_mounted_under_the_prefix(operations: dict[tuple[str, str], dict[str, object]]) -> None:
    api = {key for key in operations if key[0] != "/healthz"}
    assert all(path.startswith("/api/v1/") for path, _ in api)
    tags = {tag for key in api for tag in operations[key]["tags"]}  # type: ignore[attr-defined]
    assert tags == {"devices", "profiles", "audit", "tokens"}
    assert {("/api/v1/devices/import", "post"), ("/api/v1/devices/{device_id}/overrides", "put"),
            ("/api/v1/profiles/{name}", "delete"), ("/api/v1/audit", "get"), ("/api/v1/tokens", "post")} <= api
    assert len(api) == 20  # 8 device, 1 import, 2 overrides, 5 profile, 1 audit, 3 token operations


def test_every_operation_declares_the_common_and_write_errors(
    operations: dict[tuple[str, str], dict[str, object]],
) -> None:
    for (path, method), operation in operations.items():
        if path == "/healthz":
            continue
        declared = {int(code) for code in operation["responses"]}  # type: ignore[attr-defined]
        assert {int(c) for c in (*COMMON_ERRORS, *WRITE_ERRORS)} <= declared, (method, path)
