"""`nakhon bench` / `nakhon bench-notify` are mounted from bench/ by entry point; without the bench extra they say
what to install (and start nothing) instead of failing half-way through a run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# psutil stands in for "not installed": a None entry in sys.modules makes both find_spec and import fail.
BLOCK_PSUTIL = (
    "import sys; sys.modules['psutil'] = None; from nakhon.cli import main; "
    "sys.argv = ['nakhon', *sys.argv[1:]]; main()"
)


def _nakhon(*args: str, block_psutil: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", BLOCK_PSUTIL, *args] if block_psutil else [sys.executable, "-m", "nakhon.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize(("command", "options"), [("bench", ["--messages", "1000", "--keep"]),
                                                   ("bench-notify", ["--probes", "5", "--keep"])])
def test_without_the_bench_extra_the_command_names_the_package_to_install(command: str, options: list[str]) -> None:
    proc = _nakhon(command, *options, block_psutil=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "psutil" in proc.stderr
    assert "pip install 'nakhon[bench]'" in proc.stderr
    assert "workdir" not in proc.stderr  # nothing was started


def test_with_the_bench_extra_the_commands_keep_their_options() -> None:
    bench = _nakhon("bench", "--help")
    notify = _nakhon("bench-notify", "--help")
    assert bench.returncode == 0 and notify.returncode == 0, bench.stderr + notify.stderr
    for option in ("--messages", "--devices", "--publishers", "--qos", "--json-out", "--keep", "--probe-rate",
                   "--timeout", "--profile-collector", "--scenario", "--stations", "--pace", "--notify-wait",
                   "--repeat"):
        assert option in bench.stdout
    for option in ("--probes", "--background-rate", "--devices", "--json-out", "--keep", "--outage-s",
                   "--storm-background"):
        assert option in notify.stdout


def test_a_bad_option_is_still_refused_with_the_extra_installed() -> None:
    proc = _nakhon("bench", "--qos", "5")
    assert proc.returncode != 0
    assert "qos must be 0, 1 or 2" in proc.stderr


def test_an_unknown_scenario_and_a_repeated_live_run_are_refused_naming_what_was_wrong() -> None:
    unknown = _nakhon("bench", "--scenario", "typhoon")
    assert unknown.returncode != 0
    assert "'typhoon'" in unknown.stderr and "control" in unknown.stderr
    live = _nakhon("bench", "--repeat", "3")
    assert live.returncode != 0
    assert "--repeat is for the storm scenarios" in live.stderr
