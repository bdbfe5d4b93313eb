"""Profile files: shipped ones load; strict validation names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.feeds import FEED_SPECS
from collectors.mapping import ProfileError, builtin_profiles, load_profile, load_profiles
from collectors.mapping.units import CANONICAL_UNITS


def test_shipped_profiles_load() -> None:
    assert set(builtin_profiles()) >= {
        "air-generic-lora",
        "flood-ultrasonic-mm",
        "energy-wh-meter",
        "bus-traccar-knots",
        "air4thai-strings",
    }


def test_every_numeric_canonical_field_has_a_unit_or_is_unitless_on_purpose() -> None:
    unitless = {"power_factor", "ignition", "door_open", "occupancy"}
    for spec in FEED_SPECS.values():
        for field in spec.field_names:
            assert field in CANONICAL_UNITS or field in unitless, field


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "bad", "feed: flood\nfields:\n  distance: {to: level_m, unti: mm}\n")
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert str(path) in str(exc.value)
    assert "fields.distance.unti: unknown key" in str(exc.value)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"bad\.yaml: fieldz: unknown key"):
        load_profile(write(tmp_path, "bad", "feed: air\nfieldz: {}\n"))


def test_target_not_in_feed(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"fields\.pm\.to: 'pm25' is not a field of feed 'air'"):
        load_profile(write(tmp_path, "bad", "feed: air\nfields:\n  pm: {to: pm25}\n"))


def test_unknown_and_incompatible_units(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"fields\.d\.unit.*unknown unit 'bananas'"):
        load_profile(write(tmp_path, "a", "feed: flood\nfields:\n  d: {to: level_m, unit: bananas}\n"))
    with pytest.raises(ProfileError, match=r"fields\.d\.unit: cannot convert 'V' to 'm'"):
        load_profile(write(tmp_path, "b", "feed: flood\nfields:\n  d: {to: level_m, unit: V}\n"))


def test_bad_feed_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"c\.yaml: feed:"):
        load_profile(write(tmp_path, "c", "feed: water\n"))
    with pytest.raises(ProfileError, match=r"d\.yaml: not valid YAML"):
        load_profile(write(tmp_path, "d", "feed: [air\n"))
    with pytest.raises(ProfileError, match=r"e\.yaml: feed: required key missing"):
        load_profile(write(tmp_path, "e", "fields: {}\n"))


def test_name_must_match_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="differs from the file name"):
        load_profile(write(tmp_path, "f", "name: g\nfeed: air\n"))


def test_ultrasonic_only_for_level(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="ultrasonic gives level_m"):
        load_profile(write(tmp_path, "h", "feed: flood\nfields:\n  d: {to: rain_mm, transform: ultrasonic}\n"))


def test_load_profiles_directory(tmp_path: Path) -> None:
    write(tmp_path, "one", "feed: air\n")
    (tmp_path / "two.yml").write_text("feed: bus\n")
    assert sorted(load_profiles(tmp_path)) == ["one", "two"]
