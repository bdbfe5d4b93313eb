"""Device profiles: a registry profile is the settings of a loaded mapping profile, under its name and feed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.errors import ConflictError, InvalidInputError, ProfileNotFoundError
from gateway.registry import RegistryStore
from gateway.registry.schemas import ProfilePatch, ProfileSpec


def test_a_profile_is_created_only_for_a_loaded_mapping_profile(store: RegistryStore) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        store.profiles.create(ProfileSpec(name="not-loaded", feed="air"), actor="t")
    problem = excinfo.value.problems[0]
    assert problem.field == "name" and "not-loaded" in problem.message and "air-generic-lora" in problem.message
    assert store.profiles.all() == [] and store.audit.find().total == 0  # nothing written, nothing audited


def test_a_profile_has_its_mapping_profiles_feed(store: RegistryStore) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        store.profiles.create(ProfileSpec(name="flood-ultrasonic-mm", feed="air"), actor="t")
    assert excinfo.value.problems[0].field == "feed"
    created = store.profiles.create(ProfileSpec(name="flood-ultrasonic-mm", feed="flood"), actor="t")
    assert created.name == "flood-ultrasonic-mm" and created.feed == "flood"


def test_a_store_that_loaded_no_mapping_profiles_creates_no_profile(store: RegistryStore) -> None:
    bare = RegistryStore(store.url)  # e.g. a process that only writes audit entries
    try:
        with pytest.raises(InvalidInputError, match="loaded: none"):
            bare.profiles.create(ProfileSpec(name="air-generic-lora", feed="air"), actor="t")
    finally:
        bare.close()


def test_the_field_mapping_is_gone_from_the_api_shapes() -> None:
    """The mapping a device gets is its profile's name: a separate `field_mapping` is refused, not ignored."""
    with pytest.raises(ValidationError, match="field_mapping"):
        ProfileSpec.model_validate({"name": "pm-sensor", "feed": "air", "field_mapping": "other"})
    with pytest.raises(ValidationError, match="field_mapping"):
        ProfilePatch.model_validate({"field_mapping": "other"})


def test_ensure_creates_the_missing_rows_and_keeps_tuned_ones(store: RegistryStore) -> None:
    store.profiles.create(ProfileSpec(name="pm-sensor", feed="air", heartbeat_s=900), actor="engineer")
    loaded = [ProfileSpec(name="pm-sensor", feed="air", heartbeat_s=600), ProfileSpec(name="p1", feed="air")]
    assert store.profiles.ensure(loaded, actor="profiles") == ["p1"]
    assert store.profiles.get("pm-sensor").heartbeat_s == 900  # the operator's setting stays
    assert store.profiles.ensure(loaded, actor="profiles") == []
    with pytest.raises(ConflictError):
        store.profiles.ensure([ProfileSpec(name="p1", feed="flood")], actor="profiles")


def test_update_and_delete_are_audited_and_null_empties(store: RegistryStore) -> None:
    store.profiles.create(
        ProfileSpec(name="pm-sensor", feed="air", description="PM", default_thresholds={"pm25_warning": 37.5}),
        actor="t",
    )
    updated = store.profiles.update(
        "pm-sensor", ProfilePatch.model_validate({"description": None, "default_thresholds": None}), actor="t"
    )
    assert updated.description == "" and updated.default_thresholds == {}
    store.profiles.delete("pm-sensor", actor="t")
    with pytest.raises(ProfileNotFoundError):
        store.profiles.get("pm-sensor")
    actions = [e.action for e in store.audit.find(entity_type="profile").items]
    assert actions == ["profile.delete", "profile.update", "profile.create"]
