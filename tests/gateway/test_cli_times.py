"""Times are stored in UTC and shown to field engineers in Asia/Bangkok."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import typer
from typer.testing import CliRunner

from gateway.cli import devices_app
from gateway.registry import RegistryStore

shell = typer.Typer()
shell.add_typer(devices_app, name="devices")


def test_device_show_gives_bangkok_times_for_utc_records(tmp_path: Path) -> None:
    store = RegistryStore.for_data_dir(tmp_path / "data")
    runner = CliRunner()
    obj = {"registry": lambda: store, "provisioner": None}
    added = runner.invoke(shell, ["devices", "add", "air-bkk", "--feed", "air", "--city", "laem-chabang",
                                  "--district", "บ่อวิน"], obj=obj)
    assert added.exit_code == 0, added.output
    shown = runner.invoke(shell, ["devices", "show", "air-bkk"], obj=obj)
    line = next(x for x in shown.output.splitlines() if x.startswith("created_at"))
    value = datetime.fromisoformat(line.split()[-1])
    assert value.utcoffset() == timedelta(hours=7)
    stored = store.devices.get("air-bkk").created_at
    assert value == stored.replace(microsecond=0)  # the same instant (to the second), in Bangkok time
    store.close()
