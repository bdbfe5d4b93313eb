"""Profiles and domain settings as data: YAML profiles from a configured directory, usable by a device with no
prior API call, validated at start with file and key; `nakhon profiles list|show|check`; `[domain]` settings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from collectors.domain import DomainConfig, default_enrichers
from collectors.domain.energy import EnergyEnricher
from collectors.formats import make_format
from collectors.mapping import FieldMapper
from collectors.mapping.profiles import all_profiles, builtin_profiles
from collectors.pipeline import Input, Pipeline
from collectors.quarantine import QuarantineStore
from collectors.sinks.memory import MemorySink
from collectors.sinks.writer import BatchWriter
from gateway.registry.directory import RegistryDirectory
from gateway.registry.schemas import DeviceSpec
from nakhon.cli import app
from nakhon.config import ConfigError, load_settings
from nakhon.registry_wiring import open_registry

CUSTOM = """\
# A vendor we met in the field: level in cm, -1 means "no echo"
feed: flood
description: Vendor X gauge, level in centimetres
sentinels: [-1, -999]
fields:
  lvl: {to: level_m, unit: cm}
  batt: {to: battery_pct}
expected_fields: [level_m]
default_thresholds: {level_warn_m: 2.5}
heartbeat_s: 600
"""


def write_config(tmp_path: Path, domain: str) -> Path:
    path = tmp_path / "nakhon.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n\n[domain]\n{domain}\n', encoding="utf-8")
    return path


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "profiles"
    directory.mkdir()
    (directory / "flood-vendor-x-cm.yaml").write_text(CUSTOM, encoding="utf-8")
    return directory


async def test_device_uses_a_custom_profile_without_any_api_call(tmp_path: Path, profiles_dir: Path) -> None:
    settings = load_settings(write_config(tmp_path, f'profiles_dir = "{profiles_dir}"'))
    store = open_registry(settings)  # the loaded profiles get their registry rows
    try:
        store.devices.create(
            DeviceSpec(device_id="gauge-x1", feed="flood", city="laem-chabang", district="บ่อวิน",
                       profile="flood-vendor-x-cm"),
            actor="test",
        )
        [info] = store.view.device_infos()
        assert info.mapping == "flood-vendor-x-cm" and info.thresholds == {"level_warn_m": 2.5}
        assert info.heartbeat_s == 600
        sink = MemorySink()
        writer = BatchWriter(sink, None, flush_interval_s=0.01)
        quarantine = QuarantineStore(tmp_path / "q.db", flush_interval_s=0.01)
        pipeline = Pipeline(
            inputs=[Input(["city/+/+/+"], make_format("native"))],
            directory=RegistryDirectory(store, start=False),
            writer=writer, quarantine=quarantine, mapper=FieldMapper(),
            profiles=all_profiles(settings.domain.profiles_dir), enrichers=default_enrichers(settings.domain),
        )
        await writer.start()
        body = orjson.dumps({"lvl": 123.0, "batt": -1, "ts": 1_795_741_200})
        await asyncio.wait_for(pipeline.handle("city/laem-chabang/flood/gauge-x1", body, 1_795_741_300 * 10**9), 5)
        await writer.close()
        await quarantine.close()
        [point] = sink.query("water_level")
        assert point.fields["level_m"] == pytest.approx(1.23) and "battery_pct" not in point.fields
    finally:
        store.close()


def test_bad_profile_file_stops_the_start_naming_file_and_key(tmp_path: Path, profiles_dir: Path) -> None:
    (profiles_dir / "broken.yaml").write_text("feed: flood\nfields:\n  lvl: {to: level_m, unti: cm}\n", "utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(tmp_path, f'profiles_dir = "{profiles_dir}"'))
    message = str(caught.value)
    assert "domain.profiles_dir" in message and "broken.yaml" in message and "fields.lvl.unti" in message


def test_profiles_cli_list_show_check(tmp_path: Path, profiles_dir: Path) -> None:
    config = write_config(tmp_path, f'profiles_dir = "{profiles_dir}"')
    runner = CliRunner()
    listed = runner.invoke(app, ["--config", str(config), "profiles", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    names = {json.loads(line)["name"] for line in listed.output.splitlines()}
    assert {"flood-vendor-x-cm", "energy-wh-meter", "air-generic-lora"} <= names
    shown = runner.invoke(app, ["--config", str(config), "profiles", "show", "flood-vendor-x-cm"])
    assert shown.exit_code == 0 and json.loads(shown.output)["fields"]["lvl"]["unit"] == "cm"
    checked = runner.invoke(app, ["--config", str(config), "profiles", "check"])
    assert checked.exit_code == 0 and f"ok: {len(builtin_profiles()) + 1} profile(s)" in checked.output
    (tmp_path / "bad.yaml").write_text("feed: energy\nfields:\n  e: {to: energy_kwh, unit: Cel}\n", "utf-8")
    bad = runner.invoke(app, ["--config", str(config), "profiles", "check", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 2
    assert "bad.yaml" in bad.output and "fields.e.unit" in bad.output and "kWh" in bad.output


@pytest.mark.parametrize(
    ("domain", "key"),
    [
        ('speed_zones_path = "/nonexistent/zones.geojson"', "domain.speed_zones_path"),
        ('default_road_class = "motorway"', "domain"),
        ("sentinels = { bus = { altitude_m = [-1] } }", "domain.sentinels"),
        ("emission_factors_kgco2e_per_kwh = { 2026 = -1 }", "domain.emission_factors_kgco2e_per_kwh"),
        ("tou_off_peak_days = [\"2026-13-01\"]", "domain.tou_off_peak_days"),
        ("rolover = 1", "domain.rolover"),
    ],
)
def test_bad_domain_setting_is_an_error_naming_the_key(tmp_path: Path, domain: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(tmp_path, domain))
    assert key in str(caught.value)


def test_domain_settings_from_the_toml_reach_the_enrichers(tmp_path: Path) -> None:
    zones = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "โรงเรียน", "speed_limit_kmh": 30},
        "geometry": {"type": "Polygon", "coordinates": [[[100.9, 13.0], [101, 13.0], [101, 13.1], [100.9, 13.0]]]},
    }]}
    (tmp_path / "zones.geojson").write_text(json.dumps(zones), encoding="utf-8")
    settings = load_settings(write_config(tmp_path, "\n".join([
        f'speed_zones_path = "{tmp_path / "zones.geojson"}"',
        "emission_factors_kgco2e_per_kwh = { 2026 = 0.4750, 2027 = 0.45 }",
        'tou_off_peak_days = ["2026-11-27"]',
        'default_road_class = "rural"',
        "register_rollover_kwh = 100000",
        "time_max_future_s = 60",
        "sentinels = { energy = { power_kw = [-1] } }",
    ])))
    domain = settings.domain
    enrichers = default_enrichers(domain)
    energy = enrichers["energy"]
    assert isinstance(energy, EnergyEnricher)
    assert energy.emission_factors == {2026: 0.475, 2027: 0.45} and energy.register_rollover_kwh == 100000
    from datetime import date

    assert energy.calendar.is_off_peak_day(date(2026, 11, 27))  # a Friday, configured off-peak
    assert domain.time_policy().max_future_s == 60
    assert domain.feed_sentinels()["energy"]["power_kw"] == frozenset({-1.0})
    assert domain.feed_sentinels()["bus"]["lat"] == frozenset({-1.0, -999.0, -9999.0})  # defaults stay
    assert DomainConfig().default_road_class == "municipal"


def test_registry_site_takes_road_class_and_register_size(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, ""))
    store = open_registry(settings)
    try:
        store.devices.create(
            DeviceSpec(device_id="m1", feed="energy", city="c", district="d",
                       site={"register_digits": 6, "register_decimals": 1}),
            actor="test",
        )
        store.devices.create(
            DeviceSpec(device_id="b1", feed="bus", city="c", district="d", site={"road_class": "rural"}), actor="test"
        )
        infos = {i.device_id: i for i in store.view.device_infos()}
        assert infos["b1"].site == {"road_class": "rural"}
        bus = default_enrichers()["bus"]
        from collectors.domain.bus import BusEnricher

        assert isinstance(bus, BusEnricher) and bus.speed_limit(None, None, infos["b1"]) == 70.0
        energy = default_enrichers()["energy"]
        assert isinstance(energy, EnergyEnricher) and energy._rollover(infos["m1"]) == 100_000.0
        with pytest.raises(ValueError, match="road_class"):
            DeviceSpec(device_id="b2", feed="bus", city="c", district="d", site={"road_class": "DROP TABLE"})
    finally:
        store.close()
