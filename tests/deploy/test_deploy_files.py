"""deploy/ as data: the compose files, Grafana provisioning, Prometheus config, systemd units and the example
configuration parse, reference only files that exist, and name real configuration keys.

Not tested here: `docker compose up` (no Docker daemon in CI) — see deploy/SCALING.md.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from nakhon.config import Settings, load_settings
from tests.servers import require_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = [DEPLOY / "compose.yaml", DEPLOY / "compose.scale.yaml"]
NAKHON_SERVICES = {"collectors", "gateway"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose(path: Path = DEPLOY / "compose.yaml") -> dict[str, Any]:
    data = load_yaml(path)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), path
    return data


def host_path(spec: str, base: Path) -> Path | None:
    """The host side of a short-syntax bind mount (None for a named volume)."""
    source = spec.split(":", 1)[0]
    return (base / source).resolve() if source.startswith((".", "/")) else None


def settings_keys(model: type[BaseModel] = Settings, prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= settings_keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def env_to_key(name: str) -> str:
    assert name.startswith("NAKHON_"), name
    return name.removeprefix("NAKHON_").lower().replace("__", ".")


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_parses_and_its_files_exist(path: Path) -> None:
    data = compose(path)
    missing = []
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = host_path(volume, path.parent)
            if source is not None and not source.exists():
                missing.append(f"{name}: {volume}")
            elif source is None:
                assert volume.split(":", 1)[0] in (data.get("volumes") or {}) or path.name != "compose.yaml", volume
        build = service.get("build")
        if build:
            context = (path.parent / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), f"{name}: no Dockerfile"
        extends = service.get("extends")
        if extends:
            assert (path.parent / extends["file"]).is_file() and extends["service"] in compose(
                path.parent / extends["file"]
            )["services"]
    assert missing == []


def test_compose_stack_services_volumes_and_health_checks() -> None:
    data = compose()
    services = data["services"]
    assert {"broker", "influxdb", "grafana", "prometheus", "collectors", "gateway"} <= set(services)
    assert services["broker"]["image"].startswith("eclipse-mosquitto:2")
    assert services["influxdb"]["image"].startswith("influxdb:1.8")
    assert services["influxdb"]["environment"]["INFLUXDB_DB"] == "nakhon"
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # one-shot setup
        assert "healthcheck" in service, f"{name} has no health check"
        for volume in service.get("volumes", []):
            if host_path(volume, DEPLOY) is None:
                assert volume.split(":")[0] in data["volumes"], f"{name}: undeclared named volume {volume}"
        assert any(host_path(v, DEPLOY) is None for v in service.get("volumes", [])), (
            f"{name} keeps no data in a named volume"
        )
    for name in NAKHON_SERVICES:
        service = services[name]
        assert service["command"] == ["run", name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "/healthz" in " ".join(service["healthcheck"]["test"])
        assert service["stop_signal"] == "SIGTERM" and service["stop_grace_period"]


def test_mosquitto_reuses_the_production_config_without_anonymous_access() -> None:
    broker = compose()["services"]["broker"]
    mounts = {v.split(":")[1]: host_path(v, DEPLOY) for v in broker["volumes"] if host_path(v, DEPLOY)}
    assert mounts["/mosquitto/config/mosquitto.conf"] == DEPLOY / "mosquitto" / "mosquitto.conf"
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(r"^allow_anonymous false$", conf, re.M)
    assert "mosquitto_dynamic_security.so" in conf
    start = (DEPLOY / "mosquitto" / "start.sh").read_text()
    assert "dynsec init" in start and "mosquitto -c /mosquitto/config/mosquitto.conf" in start


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_nakhon_environment_names_real_configuration_keys(path: Path) -> None:
    keys = settings_keys()
    for name, service in compose(path)["services"].items():
        for variable in (service.get("environment") or {}):
            if variable.startswith("NAKHON_"):
                assert env_to_key(variable) in keys, f"{path.name} {name}: {variable} is not a configuration key"


def test_compose_environment_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collectors' and gateway's environment, with the secrets filled in, passes nakhon's validation."""
    for name in NAKHON_SERVICES:
        environment = compose()["services"][name]["environment"]
        for variable, value in environment.items():
            monkeypatch.setenv(variable, re.sub(r"\$\{(\w+)[^}]*\}", lambda m: f"secret-{m.group(1).lower()}",
                                                str(value)))
        settings = load_settings(None)
        assert settings.influxdb.url == "http://influxdb:8086"
        assert settings.registry.url.startswith("postgresql+psycopg://")
        assert settings.metrics.host == "0.0.0.0"
        for variable in environment:
            monkeypatch.delenv(variable)


def test_scale_overlay_runs_three_collectors_in_one_shared_group_with_emqx() -> None:
    overlay = compose(DEPLOY / "compose.scale.yaml")["services"]
    assert overlay["broker"]["image"].startswith("emqx/emqx:5")
    assert overlay["broker"]["environment"]["EMQX_MQTT__SHARED_SUBSCRIPTION_STRATEGY"] in ("hash_topic",
                                                                                        "hash_clientid")
    replicas = {n: s for n, s in overlay.items() if n.startswith("collectors")}
    assert len(replicas) == 3
    client_ids = {s["environment"]["NAKHON_MQTT__CLIENT_ID"] for s in replicas.values()}
    assert len(client_ids) == 3, "each replica needs its own stable client id (its own broker session)"
    assert {s["environment"]["NAKHON_MQTT__SHARED_GROUP"] for s in replicas.values()} == {"nakhon"}
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.scale.yml")
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "nakhon-collectors"]
    assert set(job["static_configs"][0]["targets"]) == {f"{n}:9108" for n in replicas}


def test_grafana_provisioning() -> None:
    datasources = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "nakhon.yaml")["datasources"]
    by_uid = {d["uid"]: d for d in datasources}
    assert by_uid["nakhon-influxdb"]["type"] == "influxdb"
    assert by_uid["nakhon-influxdb"]["jsonData"]["dbName"] == "nakhon"
    assert by_uid["nakhon-prometheus"]["type"] == "prometheus"
    assert by_uid["nakhon-registry"]["type"] == "grafana-postgresql-datasource"
    [provider] = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "nakhon.yaml")["providers"]
    path = provider["options"]["path"]
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: host_path(v, DEPLOY) for v in grafana["volumes"] if host_path(v, DEPLOY)}
    assert mounts[path] == ROOT / "dashboards" / "json"
    assert sorted((ROOT / "dashboards" / "json").glob("*.json")), "no dashboards to provision"
    assert mounts["/etc/grafana/provisioning/datasources"] == DEPLOY / "grafana" / "provisioning" / "datasources"
    # every datasource uid a dashboard uses is provisioned
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict) and node["datasource"].get("uid", "").startswith("nakhon"):
                used.add(node["datasource"]["uid"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for board in (ROOT / "dashboards" / "json").glob("*.json"):
        walk(json.loads(board.read_text(encoding="utf-8")))
    assert used == set(by_uid)


def test_prometheus_scrapes_the_nakhon_services() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    port = compose()["services"]["collectors"]["environment"]["NAKHON_METRICS__PORT"]
    assert {f"{name}:{port}" for name in NAKHON_SERVICES} <= targets


def test_prometheus_configs_pass_promtool() -> None:
    promtool = require_binary("promtool")  # a missing promtool fails with what to install, it is never skipped
    for name in ("prometheus.yml", "prometheus.scale.yml"):
        result = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus" / name)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_the_package_and_runs_nakhon() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for source in [*re.findall(r"^COPY (\S+) ", text, re.M), "README.md"]:
        assert (ROOT / source).exists(), source
    assert "pip install ." in text and 'ENTRYPOINT ["nakhon"]' in text and "/healthz" in text


@pytest.mark.parametrize("unit", ["nakhon-collectors.service", "nakhon-gateway.service"])
def test_systemd_unit(unit: str) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(DEPLOY / "systemd" / unit)
    service = parser["Service"]
    component = unit.removeprefix("nakhon-").removesuffix(".service")
    assert re.fullmatch(rf"\S*/nakhon --config /etc/nakhon/nakhon\.toml run {component}", service["ExecStart"])
    assert service["User"] == "nakhon"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"].removesuffix("s")) >= 30
    assert "/var/lib/nakhon" in service["ReadWritePaths"] and service["StateDirectory"] == "nakhon"
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_example_configuration_documents_every_key() -> None:
    path = DEPLOY / "nakhon.toml.example"
    settings = load_settings(path)  # it is a valid configuration as it stands
    assert settings.data_dir == Path("/var/lib/nakhon")
    text = path.read_text(encoding="utf-8")
    tomllib.loads(text)
    section = ""
    documented = set()
    for line in text.splitlines():
        header = re.match(r"^#?\s*\[+([\w.]+)\]+", line)
        if header:
            section = header.group(1).split(".")[0] + "."
            continue
        key = re.match(r"^#?\s*(\w+)\s*=", line)
        if key:
            documented.add(section + key.group(1) if section else key.group(1))
    assert settings_keys() - documented == set()


def test_readme_configuration_table_keys_are_in_the_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = (DEPLOY / "nakhon.toml.example").read_text(encoding="utf-8")
    table = readme.split("## Configuration", 1)[1].split("##", 1)[0]
    for env in set(re.findall(r"NAKHON_[A-Z_]+[A-Z]", table)) - {"NAKHON_SECTION", "NAKHON_KEY"}:
        assert env in example, f"{env} not documented in nakhon.toml.example"
