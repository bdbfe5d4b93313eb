"""Schemathesis against the app's own OpenAPI (in-process ASGI, admin token), with all its checks: no input
gives a 5xx, and no response contradicts the document (status codes, bodies, headers, content types).

Example counts are kept modest so the whole run stays well under a minute. (The schema is loaded at import:
`schemathesis.pytest.from_fixture` does not work with this pytest version.)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from gateway.api import create_app
from gateway.api.auth import AuthFailureLimiter
from gateway.broker import FakeProvisioner
from gateway.registry import RegistryStore
from gateway.registry.schemas import DeviceSpec, ProfileSpec

_DATA_DIR = tempfile.mkdtemp(prefix="nakhon-fuzz-")
_STORE = RegistryStore.for_data_dir(_DATA_DIR)
_STORE.migrate()
_TOKEN = _STORE.create_token("fuzz-admin", "admin", actor="test")[1]
AUTH = {"Authorization": f"Bearer {_TOKEN}"}
# Something to find, so that paths with ids sometimes reach the code behind them.
_STORE.create_profile(ProfileSpec(name="p1", feed="air"), actor="test")
_STORE.create_device(DeviceSpec(device_id="d1", feed="air", city="bangkok", district="Bang Rak"), actor="test")

_APP = create_app(_STORE, FakeProvisioner())
# The unauthenticated probes of the checks would otherwise trip the per-address limit of failed logins.
_APP.state.auth_limiter = AuthFailureLimiter(max_failures=10**9)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _STORE.close()
    shutil.rmtree(_DATA_DIR, ignore_errors=True)


# Every check except the two that judge which *requests* are accepted rather than what responses say: business
# rules answer 422 to schema-valid input (a profile that does not exist, an id reserved for the broker), and
# pydantic's lax parsing accepts a few inputs the schema is stricter about (0 as a time, false as a number).
REQUEST_ACCEPTANCE_CHECKS = [positive_data_acceptance, negative_data_rejection]


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error_or_contradicts_the_spec(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH, excluded_checks=REQUEST_ACCEPTANCE_CHECKS)
