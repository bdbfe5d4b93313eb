"""Parallel registrations of the same ids give one success and 409s — never a 500, a 502 or a traceback with
the rows' values in the log — on SQLite and PostgreSQL, and against a real broker."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.api import create_app
from gateway.broker import FakeProvisioner, MosquittoProvisioner
from gateway.errors import ConflictError
from gateway.registry import RegistryStore
from gateway.registry.csv_import import parse_device_csv
from gateway.registry.schemas import DeviceSpec
from gateway.service import DeviceService
from tests.gateway.brokerkit import ADMIN, Gateway, connect_code

PARALLEL = 6
HEADER = "device_id,feed,city,district,lat,lon,name,dev_eui\n"
ROWS = "".join(f"race-{i},air,bangkok,Bang Rak,13.7,100.5,secret-name-{i},70b3d57ed00500{i:02x}\n" for i in range(20))


def test_parallel_imports_of_the_same_ids_give_answers_not_errors(
    store: RegistryStore, caplog: pytest.LogCaptureFixture
) -> None:
    parsed = [parse_device_csv(HEADER + ROWS) for _ in range(PARALLEL)]

    def attempt(i: int) -> Any:
        try:
            return store.imports.apply(parsed[i], actor=f"t{i}", atomic=True)
        except ConflictError as exc:
            return exc

    with caplog.at_level(logging.DEBUG), ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(attempt, range(PARALLEL)))
    created = [r for r in results if not isinstance(r, ConflictError) and r.created]
    others = [r for r in results if r not in created]
    assert len(created) == 1 and created[0].created == 20
    for result in others:  # a 409, or it ran after the winner committed and found everything unchanged
        assert (isinstance(result, ConflictError) and result.status_code == 409) or result.unchanged == 20
    assert store.devices.find(limit=100).total == 20
    assert "secret-name-" not in caplog.text and "70b3d57ed005" not in caplog.text


def test_parallel_api_imports_and_creates_never_answer_5xx(sqlite_store: RegistryStore) -> None:
    app = create_app(sqlite_store, FakeProvisioner())
    _record, token = sqlite_store.tokens.create("racer", "engineer", actor="test")
    headers = {"Authorization": f"Bearer {token}"}
    device = {"device_id": "race-api", "feed": "air", "city": "bangkok", "district": "Bang Rak"}
    with TestClient(app) as client:

        def call(i: int) -> int:
            if i % 2:
                return client.post("/api/v1/devices", json=device, headers=headers).status_code
            body = HEADER + "race-api,air,bangkok,Bang Rak,13.7,100.5,x,\n"
            return client.post(
                "/api/v1/devices/import", content=body, headers={**headers, "content-type": "text/csv"}
            ).status_code

        with ThreadPoolExecutor(PARALLEL) as pool:
            codes = list(pool.map(call, range(PARALLEL * 2)))
    assert all(code < 500 for code in codes), codes
    assert set(codes) <= {200, 201, 409}, codes
    assert sqlite_store.devices.exists("race-api")


def test_parallel_creates_of_one_device_on_a_real_broker_give_one_success_and_409s(gateway: Gateway) -> None:
    spec = DeviceSpec(device_id="contested", feed="air", city="bangkok", district="Bang Rak")  # type: ignore[arg-type]

    async def main() -> list[Any]:
        provisioner = MosquittoProvisioner("127.0.0.1", gateway.port, *ADMIN)
        service = DeviceService(gateway.store, provisioner)
        try:
            return await asyncio.gather(
                *(service.create_device(spec, actor=f"t{i}") for i in range(PARALLEL)), return_exceptions=True
            )
        finally:
            await provisioner.close()

    results = asyncio.run(main())
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1, results
    assert all(isinstance(r, ConflictError) and r.status_code == 409 for r in losses), losses
    # the winner's account works: no loser removed it while backing out
    _device, credentials = wins[0]
    assert connect_code(gateway.port, credentials.username, credentials.password, credentials.client_id) == 0


def test_an_unexpected_error_answers_500_and_logs_no_row_values(
    sqlite_store: RegistryStore, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("INSERT INTO devices ... parameters ('secret-name-1', 13.7, 'scrypt$hash')")

    app = create_app(sqlite_store, None, extra_routers=[router])
    with caplog.at_level(logging.DEBUG), TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error" and response.json()["message_th"]
    assert "secret-name-1" not in caplog.text and "scrypt$hash" not in caplog.text
    assert "RuntimeError" in caplog.text and "/boom" in caplog.text
