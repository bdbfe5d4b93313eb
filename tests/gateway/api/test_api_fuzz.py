"""Schemathesis against the app's own OpenAPI (in-process ASGI, admin token), with all its checks: no input
gives a 5xx, and no response contradicts the document (status codes, bodies, headers, content types).

Example counts are kept modest so the whole run stays well under a minute. (The schema is loaded at import:
`schemathesis.pytest.from_fixture` does not work with this pytest version.)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation

from gateway.api import create_app, require_role
from gateway.api.auth import AuthFailureLimiter
from gateway.broker import FakeProvisioner
from gateway.registry import RegistryStore
from gateway.registry.schemas import DeviceSpec, ProfileSpec
from rules.api import build_router
from rules.store import AlertStore
from tests.gateway.loaded_profiles import MAPPING_PROFILES

_DATA_DIR = tempfile.mkdtemp(prefix="nakhon-fuzz-")
_STORE = RegistryStore.for_data_dir(_DATA_DIR, mapping_profiles=MAPPING_PROFILES)
_STORE.migrate()
_TOKEN = _STORE.tokens.create("fuzz-admin", "admin", actor="test")[1]
AUTH = {"Authorization": f"Bearer {_TOKEN}"}
# Something to find, so that paths with ids sometimes reach the code behind them.
_STORE.profiles.create(ProfileSpec(name="p1", feed="air"), actor="test")
_STORE.devices.create(DeviceSpec(device_id="d1", feed="air", city="bangkok", district="Bang Rak"), actor="test")

_ALERTS = AlertStore(_STORE.url)
_APP = create_app(_STORE, FakeProvisioner(), extra_routers=[build_router(_ALERTS, require_role)])
# The unauthenticated probes of the checks would otherwise trip the per-address limit of failed logins.
_APP.state.auth_limiter = AuthFailureLimiter(max_failures=10**9)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _ALERTS.close()
    _STORE.close()
    shutil.rmtree(_DATA_DIR, ignore_errors=True)


# Rules that JSON Schema cannot state here (field: what its message says): a profile lists only its own feed's
# fields; ids the broker's service accounts use are refused without regard to case; a silence's regex compiles.
RULES_BEYOND_THE_SCHEMA = {
    "expected_fields": "not fields of feed",
    "device_id": "reserved for the broker",
    "matchers": "invalid regular expression",
}


def _refused_by_a_rule(response: Any) -> bool:
    """A 422 whose every problem is a rule the schema cannot state: one about stored data (an unknown profile, a
    configured reserved id, a CSV row), which carries no `in`, or one of `RULES_BEYOND_THE_SCHEMA`. A value of
    the wrong type, pattern or range (any other field named with `in`) is not one of them: it fails the check."""
    if response.status_code != 422:
        return False
    errors = response.json().get("errors") or []
    # A list item that may take several shapes (a matcher is a string or an object) is refused with one error per
    # shape (`matchers.1.constrained-str`, `matchers.1.function-after[...]`): the item is refused by the rule
    # when one of its errors is the rule's.
    by_rule = {_item(e) for e in errors if "in" in e and _beyond_the_schema(e)}
    return bool(errors) and all("in" not in e or _item(e) in by_rule for e in errors)


def _item(error: dict[str, Any]) -> str:
    """The field, or the list item it belongs to (`matchers.5.function-after[...]` -> `matchers.5`)."""
    return ".".join(str(error.get("field")).split(".")[:2])


def _beyond_the_schema(error: dict[str, Any]) -> bool:
    # An item of a list is named by its path (`matchers.5.function-after[...]`): the rule is the list's.
    words = RULES_BEYOND_THE_SCHEMA.get(str(error.get("field")).split(".", 1)[0])
    return words is not None and words in str(error.get("message", ""))


@schemathesis.check
def positive_data_acceptance_beside_business_rules(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """`positive_data_acceptance`, except for the documented 422 of a business rule (see the 422 response)."""
    if _refused_by_a_rule(response):
        return None
    return positive_data_acceptance(ctx, response, case)


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error_or_contradicts_the_spec(case: schemathesis.Case) -> None:
    # A case whose headers were made invalid on purpose (Authorization missing or malformed) is sent as made, so
    # that the checks judge the request actually sent; every other case carries the admin token.
    as_made = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    case.call_and_validate(
        headers=None if as_made else AUTH,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[positive_data_acceptance_beside_business_rules],
    )
