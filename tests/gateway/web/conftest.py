"""The real stack for the console's browser tests: Mosquitto with dynamic security, `nakhon run` (collectors,
rules engine and gateway with the console in one process) and Debian's chromium driven by Playwright."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.registry.schemas import DeviceSpec
from gateway.registry.store import RegistryStore
from gateway.web.users import UserStore
from tests.e2e.harness import CollectorProcess, MosquittoServer, free_port, write_config
from tests.servers import dynsec_mosquitto

ADMIN = ("nakhon-admin", "admin-pass-console")
COLLECTOR = ("nakhon-collector", "collector-pass-console")
PASSWORD = "ดอกไม้-correct-horse"  # a Thai passphrase: UTF-8 all the way through the login form
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
USERS = {  # name: (role, cities)
    "somchai": ("engineer", ()),
    "malee": ("operator", ()),
    "prasert": ("viewer", ()),
    "cm-eng": ("engineer", ("chiangmai",)),
}


@dataclass
class Stack:
    url: str  # the console, on the gateway's port
    broker: MosquittoServer
    registry_url: str
    data_dir: Path


def _seed(registry_url: str) -> None:
    registry = RegistryStore(registry_url)
    registry.migrate()
    users = UserStore(registry)
    for name, (role, cities) in USERS.items():
        users.add_user(name, PASSWORD, role, cities=cities, actor="test", lang="th")
    for device_id, city in (("air-cm-01", "chiangmai"), ("air-lc-01", "laem-chabang")):
        registry.devices.create(
            DeviceSpec(device_id=device_id, feed="air", city=city, district="เมือง", name=f"สถานี {city}",
                       lat=13.1, lon=100.9),
            actor="test",
        )
    registry.close()
    from rules.store import AlertStore

    alerts = AlertStore(registry_url)
    now = time.time_ns()
    for device_id, city in (("air-cm-01", "chiangmai"), ("air-lc-01", "laem-chabang")):
        alerts.open_alert(
            rule="air_pm25_high", device_id=device_id, city=city, district="เมือง", feed="air", severity="warning",
            state="firing", t_ns=now, value=80.0, threshold=75.0,
            message_th=f"ฝุ่น PM2.5 สูงที่ {city}", message_en=f"High PM2.5 at {city}",
        )
    alerts.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("console")
    with dynsec_mosquitto(tmp, *ADMIN) as broker:
        gateway_port, metrics_port = free_port(), free_port()
        config = write_config(
            tmp,
            mqtt_url=f"mqtt://{COLLECTOR[0]}:{COLLECTOR[1]}@127.0.0.1:{broker.port}",
            metrics_port=metrics_port,
            gateway_port=gateway_port,
            gateway_extra=f'mqtt_admin_username = "{ADMIN[0]}"\nmqtt_admin_password = "{ADMIN[1]}"\n',
        )
        registry_url = f"sqlite:///{tmp / 'data' / 'registry.db'}"
        _seed(registry_url)
        service = CollectorProcess(config, metrics_port, tmp / "nakhon.log", component="all")
        service.start()
        base = f"http://127.0.0.1:{gateway_port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"gateway not up:\n{service.log()}")
                time.sleep(0.1)
            yield Stack(f"{base}/console", broker, registry_url, tmp / "data")
        finally:
            service.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if shutil.which(CHROMIUM) is None:
        raise AssertionError("Debian's chromium is missing: run `bash scripts/setup.sh --test`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() starts chromium on a fresh temporary profile (user-data-dir) that it deletes afterwards
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
