"""The benchmark harness's own parts: the webhook receiver (normal and outage mode) and the threaded load."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from bench.load import ThreadedLoad
from bench.notify import WebhookReceiver


def _post(port: int, body: bytes) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/notify", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_webhook_records_every_post_as_an_object() -> None:
    webhook = WebhookReceiver()
    webhook.start()
    try:
        assert _post(webhook.port, b'{"message": "hi"}') == 200
        assert _post(webhook.port, b"[1, 2]") == 200
        assert _post(webhook.port, b"not json") == 200
    finally:
        webhook.stop()
    assert [hit.body for hit in webhook.snapshot()] == [{"message": "hi"}, {"_": [1, 2]}, {"_raw": "not json"}]
    assert webhook.refused == 0


def test_webhook_in_an_outage_refuses_and_records_nothing_until_it_recovers() -> None:
    webhook = WebhookReceiver(down=True)
    webhook.start()
    try:
        assert _post(webhook.port, b'{"n": 1}') == 500
        assert _post(webhook.port, b'{"n": 2}') == 500
        assert webhook.snapshot() == []
        webhook.recover()
        assert _post(webhook.port, b'{"n": 3}') == 200
    finally:
        webhook.stop()
    assert webhook.refused == 2
    assert [hit.body for hit in webhook.snapshot()] == [{"n": 3}]
    assert webhook.apprise_url == f"json://127.0.0.1:{webhook.port}/notify"


class _Counting(ThreadedLoad[int]):
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        super().__init__("test-load", "test load")

    def publish(self, stop: threading.Event) -> int:
        if self.fail:
            raise ConnectionError("broker gone")
        n = 0
        while not stop.wait(0.001):
            n += 1
        return n


def test_threaded_load_returns_its_stats_when_stopped() -> None:
    load = _Counting()
    load.start()
    assert load.alive()
    assert load.stop() >= 0
    assert not load.alive()


def test_threaded_load_that_failed_raises_on_stop() -> None:
    load = _Counting(fail=True)
    load.start()
    load._thread.join(10)  # failed before anyone stopped it
    assert not load.alive()
    with pytest.raises(RuntimeError, match="test load failed: ConnectionError"):
        load.stop()


def test_sampler_counts_only_the_cpu_used_inside_its_window() -> None:
    """A process that burned ~0.6 s of CPU before the window and sleeps through it used ~0 s in the window (the
    baseline used to count from 0, so a process's whole life — the collector's start-up — was reported)."""
    import subprocess
    import sys
    import time

    from bench.ingest import ProcessSampler

    program = (
        "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
        "print(1, flush=True)\ntime.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "1"  # its CPU is spent
        sampler = ProcessSampler({"sleeper": [proc.pid]}, collector_pid=proc.pid, interval_s=0.05)
        sampler.start()
        time.sleep(0.3)
        sampler.stop()
        assert sampler.cpu_seconds()["sleeper"] < 0.2
        assert sampler.cpu_seconds()["collector"] < 0.2
    finally:
        proc.kill()
        proc.wait()
