"""Fault tests with real receivers (aiosmtpd, HTTP) and the rules service as its own process: a SIGKILL with
notifications queued and mid-retry, a long webhook outage, SMTP down, SMTP 550. Each asserts exactly which messages
arrive and how many times. Outages are shortened by a small backoff cap (a 10 s outage at a 1 s cap exercises the
same path as 5 minutes at the shipped 5 min cap); waits are bounded, never asserted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rules.notify.outbox import OWED
from rules.notify.pipeline import NotificationPipeline, build_notifiers
from rules.notify.render import Renderer
from rules.notify.retry import RetryPolicy
from rules.notify.routing import parse_routing
from rules.store import AlertStore, OutboxRow
from rules.timeutil import SystemClock
from tests.rules.notify.test_pipeline import fire
from tests.rules.receivers import SmtpServer, WebhookServer
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[3]


def routing_yaml(hook_port: int, smtp_port: int, cap: str = "1s") -> str:
    return f"""
receivers:
  - name: webhook
    urls: ["json://127.0.0.1:{hook_port}/hook"]
    language: en
    retry: {{initial: 200ms, max: {cap}}}
  - name: email
    urls: ["mailto://127.0.0.1:{smtp_port}?from=alerts@nakhon.local&to=flood@chiangmai.go.th&mode=insecure"]
    retry: {{initial: 200ms, max: {cap}}}
route:
  receiver: webhook
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 0s
  routes:
    - {{match: {{feed: flood}}, receiver: webhook, continue: true}}
    - {{match: {{feed: flood}}, receiver: email}}
"""


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        time.sleep(0.05)


async def await_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.05)


def owed(store: AlertStore) -> int:
    from sqlalchemy import func, select

    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(OutboxRow.state == OWED)).scalar_one())


def webhook_alerts(hook: WebhookServer) -> Counter[str]:
    return Counter(a["alert_id"] for body in hook.received for a in body["alerts"])


class Child:
    """The rules service in its own process (tests/rules/notify_child.py)."""

    def __init__(self, db_url: str, routing: Path, log: Path) -> None:
        self.db_url, self.routing, self.log = db_url, routing, log
        self.proc: subprocess.Popen[str] | None = None

    def start(self, fire: int = 0) -> None:
        args = [sys.executable, "-m", "tests.rules.notify_child", self.db_url, str(self.routing)]
        if fire:
            args += ["--fire", str(fire)]
        self.log_file = open(self.log, "a")  # noqa: SIM115 - the child's for its lifetime
        self.proc = subprocess.Popen(
            args, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log_file, text=True, env={**os.environ}
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the child is up (or dies: EOF)
        if line.strip() != "ready":
            raise AssertionError(f"child did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log_file.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


@pytest.fixture
def child_env(tmp_path: Path) -> Iterator[tuple[str, AlertStore, Callable[[str], Child]]]:
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    store = AlertStore(url)
    children: list[Child] = []

    def make(routing: str) -> Child:
        path = tmp_path / "routing.yaml"
        path.write_text(routing)
        child = Child(url, path, tmp_path / "child.log")
        children.append(child)
        return child

    yield url, store, make
    for c in children:
        c.stop()
    store.close()


def test_sigkill_mid_retry_and_queued_then_restart_delivers_each_exactly_once(child_env) -> None:
    _, store, make = child_env
    smtp_port = free_port()  # SMTP down: nothing listens yet
    with WebhookServer(status=500) as hook:
        child = make(routing_yaml(hook.port, smtp_port))
        child.start(fire=3)
        wait_until(lambda: hook.hits >= 6, 20, "the webhook retried (mid-retry)")
        child.kill()
        assert hook.received == [] and owed(store) == 6  # 3 alerts × 2 receivers, all still owed after the kill

        hook.status = 200
        with SmtpServer(port=smtp_port) as smtp:
            child.start()  # no new alerts: only what the outbox owes
            wait_until(lambda: owed(store) == 0, 30, "everything owed delivered after the restart")
            child.kill()
    alerts = {a.id for a in store.list_alerts()}
    assert webhook_alerts(hook) == Counter({a: 1 for a in alerts})  # each alert exactly once
    assert sorted(smtp.subjects()) == sorted(set(smtp.subjects())) and len(smtp.subjects()) == 3
    assert all("น้ำล้นตลิ่ง" in s or "Overbank" in s for s in smtp.subjects())  # the overbank rule's own words
    assert {n.outcome for n in store.list_notifications()} == {"sent"}


def test_sigkill_after_delivery_then_restart_sends_nothing_twice(child_env) -> None:
    _, store, make = child_env
    with WebhookServer() as hook, SmtpServer() as smtp:
        child = make(routing_yaml(hook.port, smtp.port))
        child.start(fire=3)
        wait_until(lambda: owed(store) == 0 and len(smtp.messages) == 3, 20, "all delivered")
        child.kill()
        child.start()  # restores the 3 firing alerts: the notification log says they were told
        child.kill()
        assert owed(store) == 0
    assert sum(webhook_alerts(hook).values()) == 3 and len(hook.received) == 3
    assert len(smtp.messages) == 3


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlertStore]:
    """SQLite only here (the outbox itself is tested on PostgreSQL too, in test_outbox.py): keeps the suite short."""
    s = AlertStore(f"sqlite:///{tmp_path / 'faults.db'}")
    yield s
    s.close()


def pipeline_for(store: AlertStore, routing: str) -> NotificationPipeline:
    config = parse_routing(routing)
    return NotificationPipeline(
        config,
        build_notifiers(config),
        store,
        clock=SystemClock(),
        renderer=Renderer("https://nakhon.cm.go.th"),
        retry=RetryPolicy(timeout_s=5),
    )


async def test_webhook_500_for_a_long_outage_then_200_delivers_every_alert_once(store: AlertStore) -> None:
    """Alerts raised before and during a 10 s outage (cap 1 s: ~10 retries each), one resolving meanwhile."""
    with WebhookServer(status=500) as hook, SmtpServer() as smtp:
        pipe = pipeline_for(store, routing_yaml(hook.port, smtp.port))
        now = time.time_ns()
        raised = [fire(store, "flood_level_overbank", f"P.{i}", "flood", now, "critical") for i in range(3)]
        for a in raised[:2]:
            await pipe.submit(a)
        await await_until(lambda: hook.hits >= 4, 10, "retrying")
        await pipe.submit(raised[2])
        resolved = store.resolve(raised[0].id, time.time_ns())
        assert resolved is not None
        await pipe.submit(resolved)
        await asyncio.sleep(10)  # the outage
        assert hook.received == []
        hook.status = 200
        await pipe.drain(30)
        await pipe.stop()
    bodies = [(b["kind"], [a["alert_id"] for a in b["alerts"]]) for b in hook.received]
    assert sorted(bodies) == sorted(
        [
            ("firing", [raised[0].id]),
            ("firing", [raised[1].id]),
            ("firing", [raised[2].id]),
            ("resolved", [raised[0].id]),
        ]
    )
    assert bodies.index(("firing", [raised[0].id])) < bodies.index(("resolved", [raised[0].id]))  # firing first
    assert hook.hits > 10  # it kept trying through the outage
    assert len(smtp.messages) == 4  # email was never down: 3 firing + 1 resolve, each once


async def test_smtp_down_then_up_delivers_each_email_once(store: AlertStore) -> None:
    smtp_port = free_port()
    with WebhookServer() as hook:
        pipe = pipeline_for(store, routing_yaml(hook.port, smtp_port))
        raised = [fire(store, "flood_level_overbank", f"P.{i}", "flood", time.time_ns(), "critical") for i in range(2)]
        for a in raised:
            await pipe.submit(a)
        await await_until(
            lambda: any(n.outcome == "retrying" and n.receiver == "email" for n in store.list_notifications()),
            10,
            "email retrying",
        )
        await asyncio.sleep(3)  # SMTP stays down a while
        with SmtpServer(port=smtp_port) as smtp:
            await pipe.drain(30)
        await pipe.stop()
    assert sorted(SmtpServer.subject(m) for m in smtp.messages) == sorted(
        f"[วิกฤต / Critical] แจ้งเตือน / Alert: ทดสอบ flood_level_overbank · P.{i}" for i in range(2)
    )
    assert len(hook.received) == 2


async def test_smtp_550_stops_at_once_and_no_resolve_follows(store: AlertStore) -> None:
    with (
        WebhookServer() as hook,
        SmtpServer(reject_rcpt="550 5.1.1 <flood@chiangmai.go.th> mailbox unavailable") as smtp,
    ):
        pipe = pipeline_for(store, routing_yaml(hook.port, smtp.port))
        a = fire(store, "flood_level_overbank", "P.1", "flood", time.time_ns(), "critical")
        await pipe.submit(a)
        await pipe.drain(10)
        [failed] = store.list_notifications(failed=True)
        assert (failed.receiver, failed.kind, failed.attempts) == ("email", "firing", 1)
        assert "SMTP 550" in (failed.error or "") and "mailbox unavailable" in (failed.error or "")
        await asyncio.sleep(1.1)  # past group_interval: the resolve is its own message
        resolved = store.resolve(a.id, time.time_ns())
        assert resolved is not None
        await pipe.submit(resolved)
        await pipe.drain(10)
        await pipe.stop()
    assert smtp.messages == []  # never the firing, so never its resolve
    assert [n.kind for n in store.list_notifications() if n.receiver == "email"] == ["firing"]
    assert [b["kind"] for b in hook.received] == ["firing", "resolved"]
