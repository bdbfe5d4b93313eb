"""Real servers for the tests and `nakhon bench`: each started on free loopback ports with its own config and
data dir, waited for, and stopped. Never a server a previous run left behind.

    with MosquittoServer(tmp_path) as broker: ...   # broker.port, broker.url
    with InfluxServer(tmp_path) as influx: ...      # influx.url, influx.query(...)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on port {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def require_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run `bash scripts/setup.sh` (installs the apt packages)")
    return path


class _Server:
    """A child process owning a port; a context manager that stops it (SIGTERM, then SIGKILL)."""

    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: Path

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class MosquittoServer(_Server):
    """Mosquitto on a free port. `extra_conf` lines are appended (e.g. the dynamic-security plugin).

    Queues are made deep enough that a QoS 1 subscriber that is slower than its publishers loses nothing
    (Mosquitto's default `max_queued_messages 1000` drops QoS 1 messages beyond it).
    """

    def __init__(self, workdir: Path, *, extra_conf: str = "", allow_anonymous: bool = True, port: int = 0) -> None:
        self.dir = Path(workdir) / f"mosquitto-{os.getpid()}-{id(self)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra_conf = extra_conf
        self.allow_anonymous = allow_anonymous
        self.port = port or free_port()
        self.log_path = self.dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        return "\n".join(
            [
                f"listener {self.port} 127.0.0.1",
                f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
                "persistence true",
                f"persistence_location {self.dir}/",
                f"log_dest file {self.log_path}",
                "log_type error",
                "log_type warning",
                "max_queued_messages 1000000",
                "max_queued_bytes 0",
                "max_inflight_messages 0",
                "set_tcp_nodelay true",
                self.extra_conf,
                "",
            ]
        )

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self.proc = subprocess.Popen(
            [require_binary("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, proc=self.proc)


class InfluxServer(_Server):
    """InfluxDB 1.x (Debian's influxd) on free ports with its own data dir; `database` is created."""

    def __init__(self, workdir: Path, *, database: str = "nakhon", auth: bool = False, max_body_bytes: int = 0) -> None:
        self.max_body_bytes = max_body_bytes  # [http] max-body-size: 0 is unlimited; more answers 413
        self.dir = Path(workdir) / f"influxdb-{os.getpid()}-{id(self)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.rpc_port = free_port()
        self.database = database
        self.auth = auth
        self.log_path = self.dir / "influxd.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.dir / "influxdb.conf"
        conf.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.dir}/meta"
[data]
  dir = "{self.dir}/data"
  wal-dir = "{self.dir}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {'true' if self.auth else 'false'}
  log-enabled = false
  max-body-size = {self.max_body_bytes}
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
"""
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [require_binary("influxd"), "-config", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, proc=self.proc, timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/ping", timeout=1).status_code == 204:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("influxd did not answer /ping")
            time.sleep(0.1)
        if self.auth:
            self.query("CREATE USER admin WITH PASSWORD 'admin-secret' WITH ALL PRIVILEGES", auth=None)
        self.query(f'CREATE DATABASE "{self.database}"')

    def query(
        self, q: str, *, auth: tuple[str, str] | None = ("admin", "admin-secret"), db: str | None = None,
        epoch: str | None = None,
    ) -> Any:
        """Run InfluxQL; returns the parsed JSON `results` (times as integers when `epoch` is given)."""
        params = {"q": q}
        if epoch:
            params["epoch"] = epoch
        if db or self.database:
            params["db"] = db or self.database
        response = httpx.post(
            f"{self.url}/query", params=params, auth=auth if self.auth and auth else None, timeout=30
        )
        response.raise_for_status()
        results = response.json()["results"]
        for result in results:
            if "error" in result:
                raise RuntimeError(f"InfluxQL error for {q!r}: {result['error']}")
        return results

    def rows(self, q: str, *, epoch: str | None = None) -> list[dict[str, Any]]:
        """Rows of an InfluxQL SELECT as dicts (tags merged in for GROUP BY series)."""
        out: list[dict[str, Any]] = []
        for result in self.query(q, epoch=epoch):
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    out.append(row)
        return out

    def count(self, measurement: str, field: str) -> int:
        rows = self.rows(f'SELECT count("{field}") FROM "{measurement}"')
        return int(rows[0]["count"]) if rows else 0


class PrometheusServer(_Server):
    """Prometheus scraping the given targets every `interval`."""

    def __init__(self, workdir: Path, targets: list[str], *, interval: str = "1s") -> None:
        self.dir = Path(workdir) / f"prometheus-{os.getpid()}-{id(self)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.targets = targets
        self.interval = interval
        self.log_path = self.dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.dir / "prometheus.yml"
        targets = ", ".join(f'"{t}"' for t in self.targets)
        conf.write_text(
            f"global:\n  scrape_interval: {self.interval}\n  evaluation_interval: {self.interval}\n"
            f"scrape_configs:\n  - job_name: nakhon\n    static_configs:\n      - targets: [{targets}]\n"
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    require_binary("prometheus"),
                    f"--config.file={conf}",
                    f"--storage.tsdb.path={self.dir}/data",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, proc=self.proc, timeout=30)
