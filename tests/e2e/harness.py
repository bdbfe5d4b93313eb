"""End-to-end harness: a real Mosquitto, a real InfluxDB and `nakhon run` as a separate process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.servers import InfluxServer, MosquittoServer, free_port

NAKHON = [sys.executable, "-m", "nakhon.cli"]


def write_config(
    directory: Path,
    *,
    mqtt_url: str,
    influx_url: str = "",
    metrics_port: int = 0,
    gateway_port: int = 0,
    gateway_extra: str = "",
    extra: str = "",
) -> Path:
    config = directory / "nakhon.toml"
    config.write_text(
        f'data_dir = "{directory / "data"}"\n'
        f"[mqtt]\nurl = \"{mqtt_url}\"\nclient_id = \"e2e-collector\"\n"
        f'[influxdb]\nurl = "{influx_url}"\ndatabase = "nakhon"\n'
        f"[metrics]\nport = {metrics_port or free_port()}\n"
        f"[gateway]\nport = {gateway_port or free_port()}\n{gateway_extra}"
        f"{extra}"
    )
    return config


def nakhon(config: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
           input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*NAKHON, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        input=input_text,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"nakhon {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


class CollectorProcess:
    """`nakhon run collectors` in its own process, so it can be SIGKILLed and restarted."""

    def __init__(self, config: Path, metrics_port: int, log_path: Path, component: str = "collectors") -> None:
        self.component = component
        self.config = config
        self.metrics_port = metrics_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen([*NAKHON, "--config", str(self.config), "run", self.component],
                                     stdout=log, stderr=subprocess.STDOUT)
        self.wait_healthy()

    def health(self) -> tuple[int, dict]:
        response = httpx.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2)
        return response.status_code, response.json()

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text

    def wait_healthy(self, timeout_s: float = 40.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"collector exited {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.health()
                if status == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"collector not healthy within {timeout_s}s:\n{self.log()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


__all__ = ["CollectorProcess", "InfluxServer", "MosquittoServer", "free_port", "nakhon", "write_config"]
