"""City display names: set, replaced, audited; a name is required."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidInputError
from gateway.registry import RegistryStore


def test_city_names_are_set_replaced_and_audited(store: RegistryStore) -> None:
    store.cities.set("laem-chabang", " แหลมฉบัง ", "Laem Chabang", actor="t")
    store.cities.set("laem-chabang", "เทศบาลนครแหลมฉบัง", "Laem Chabang City", actor="t")
    assert store.cities.all() == {"laem-chabang": ("เทศบาลนครแหลมฉบัง", "Laem Chabang City")}
    entries = store.audit.find(entity_type="city").items
    assert entries[0].before == {"name_th": "แหลมฉบัง", "name_en": "Laem Chabang"} and entries[1].before is None
    with pytest.raises(InvalidInputError):
        store.cities.set("pattaya", " ", "", actor="t")
    assert "pattaya" not in store.cities.all()
