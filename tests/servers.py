"""Real servers for tests: see `bench.localservers` (shared with `nakhon bench`), plus a Mosquitto with the
dynamic-security plugin for the gateway and end-to-end tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.localservers import (
    InfluxServer,
    MosquittoServer,
    PrometheusServer,
    free_port,
    require_binary,
    wait_for_port,
)


@contextmanager
def dynsec_mosquitto(workdir: Path, admin_username: str, admin_password: str) -> Iterator[MosquittoServer]:
    """Mosquitto with dynamic security and no anonymous access; `admin_*` may send dynsec commands."""
    from gateway.broker.setup import dynsec_conf_lines, hand_to_broker_user, init_dynsec_file, limit_conf_lines

    # Mosquitto started as root runs as `mosquitto`: the dynsec file lives in a directory it owns.
    dynsec_dir = Path(tempfile.mkdtemp(prefix="nakhon-dynsec-"))
    dynsec = init_dynsec_file(dynsec_dir / "dynamic-security.json", admin_username, admin_password)
    hand_to_broker_user(dynsec_dir, dynsec)
    try:
        extra = limit_conf_lines() + dynsec_conf_lines(dynsec)  # the production limits, as deploy/ ships them
        with MosquittoServer(workdir, allow_anonymous=False, extra_conf=extra) as server:
            yield server
    finally:
        shutil.rmtree(dynsec_dir, ignore_errors=True)


__all__ = [
    "InfluxServer",
    "MosquittoServer",
    "PrometheusServer",
    "dynsec_mosquitto",
    "free_port",
    "require_binary",
    "wait_for_port",
]
