"""`nakhon simulate` as the app shell mounts it: URL and registry from `ctx.obj`, a summary at the end."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from nakhon.sim.cli import simulate
from tests.servers import MosquittoServer


def shell() -> typer.Typer:
    """A stand-in for the lead's app shell: a group with a callback, `simulate` mounted as a command."""
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    app.command("simulate")(simulate)
    return app


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    with MosquittoServer(tmp_path) as server:
        yield server


def test_simulate_with_url_from_config_and_register(broker: MosquittoServer) -> None:
    registered: list[str] = []

    def register_devices(csv_text: str) -> str:
        registered.append(csv_text)
        return "registered 20 devices"

    result = CliRunner().invoke(
        shell(),
        ["simulate", "--devices", "20", "--rate", "200", "--duration", "1", "--speed", "60", "--register"],
        obj={"mqtt_url": broker.url, "register_devices": register_devices},
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(registered[0])))
    assert len(rows) == 20
    assert "registered 20 devices" in result.output
    summary = dict(part.split("=") for part in result.stdout.strip().splitlines()[-1].split())
    assert int(summary["published"]) == int(summary["acknowledged"]) > 0
    assert int(summary["failed"]) == 0 and float(summary["rate"]) > 0


def test_simulate_with_explicit_url_and_count(broker: MosquittoServer) -> None:
    result = CliRunner().invoke(
        shell(), ["simulate", "--url", broker.url, "--rate", "0", "--count", "300", "--devices", "10"], obj={}
    )
    assert result.exit_code == 0, result.output
    assert "published=300 acknowledged=300 failed=0" in result.stdout


def test_simulate_takes_the_url_from_the_shell_settings(broker: MosquittoServer) -> None:
    settings = SimpleNamespace(mqtt=SimpleNamespace(url=broker.url))
    result = CliRunner().invoke(
        shell(), ["simulate", "--rate", "0", "--count", "100", "--devices", "8"], obj={"settings": lambda: settings}
    )
    assert result.exit_code == 0, result.output
    assert "published=100 acknowledged=100 failed=0" in result.stdout


def test_simulate_without_url_or_registry_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAKHON_MQTT_URL", raising=False)
    result = CliRunner().invoke(shell(), ["simulate", "--duration", "1"], obj={})
    assert result.exit_code == 2 and "no MQTT URL" in result.output
    result = CliRunner().invoke(shell(), ["simulate", "--register"], obj={"mqtt_url": "mqtt://127.0.0.1:1"})
    assert result.exit_code == 2 and "--register" in result.output
