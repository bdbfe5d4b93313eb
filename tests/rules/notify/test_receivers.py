"""Integration: the real apprise notifier against a real SMTP server and real HTTP webhook receivers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from rules.api import build_router
from rules.check import load_rules_dir
from rules.engine import RulesEngine
from rules.notify.apprise_notifier import AppriseNotifier
from rules.notify.base import NotifyMessage, PermanentNotifyError, RetryableNotifyError
from rules.notify.pipeline import NotificationPipeline, RetryPolicy, build_notifiers
from rules.notify.render import Renderer
from rules.notify.routing import parse_routing
from tests.rules.conftest import T0, PointSink, device, minutes, reading
from tests.rules.receivers import SmtpServer, WebhookServer
from tests.servers import free_port


def stub_require_role(*roles: str) -> Any:
    def dependency(x_role: str = Header("viewer"), x_user: str = Header("tester")) -> dict[str, str]:
        if x_role not in roles:
            raise HTTPException(403, "forbidden")
        return {"username": x_user, "role": x_role}

    return Depends(dependency).dependency


def message(**kw: Any) -> NotifyMessage:
    base: dict[str, Any] = dict(
        receiver="r", title="แจ้งเตือน ระดับน้ำ", body="น้ำล้นตลิ่ง", severity="critical", kind="firing", alert_ids=["a"]
    )
    base.update(kw)
    return NotifyMessage(**base)


async def test_thai_email_through_apprise_mailto() -> None:
    with SmtpServer() as smtp:
        notifier = AppriseNotifier(
            "email", [f"mailto://127.0.0.1:{smtp.port}?from=alerts@nakhon.local&to=ops@chiangmai.go.th&mode=insecure"]
        )
        await notifier.send(message(title="[วิกฤต] น้ำล้นตลิ่ง P.1", body="ระดับน้ำ 104% ของตลิ่ง\n14 ก.ย. 2569"))
        assert len(smtp.messages) == 1
        msg = smtp.messages[0]
        assert SmtpServer.subject(msg) == "[วิกฤต] น้ำล้นตลิ่ง P.1"
        assert "ระดับน้ำ 104% ของตลิ่ง" in SmtpServer.text(msg)
        assert smtp.envelopes[0].rcpt_tos == ["ops@chiangmai.go.th"]


async def test_apprise_errors_are_classified_and_redacted() -> None:
    with WebhookServer(status=500) as down, WebhookServer(status=400) as bad:
        secret = "SuperSecret991"
        retry = AppriseNotifier("a", [f"json://user:{secret}@127.0.0.1:{down.port}/hook"])
        perm = AppriseNotifier("b", [f"json://127.0.0.1:{bad.port}/hook?+X-Api-Key={secret}"])
        refused = AppriseNotifier("c", [f"json://127.0.0.1:{free_port()}/hook"])
        for notifier, kind in (
            (retry, RetryableNotifyError),
            (perm, PermanentNotifyError),
            (refused, RetryableNotifyError),
        ):
            try:
                await notifier.send(message())
            except kind as exc:
                assert secret not in str(exc)
            else:  # pragma: no cover
                raise AssertionError(f"{notifier.name} should fail with {kind.__name__}")
        assert secret not in " ".join(retry.safe_urls + perm.safe_urls)
    invalid = AppriseNotifier("d", ["nosuchscheme://x"])
    with pytest.raises(PermanentNotifyError, match="nosuchscheme"):
        await invalid.send(message())


async def test_line_messaging_api_url_is_supported_by_installed_apprise() -> None:
    notifier = AppriseNotifier("line", ["line://ChannelAccessToken1234567890/U1234567890abcdef1234567890abcdef"])
    assert notifier.config_error is None
    assert "ChannelAccessToken" not in notifier.safe_urls[0]


async def test_end_to_end_email_webhook_failing_receivers_and_api(store, clock, tmp_path) -> None:
    secret = "TopSecretToken77"
    with SmtpServer() as smtp, WebhookServer() as hook, WebhookServer(status=500, delay_s=0.3) as failing:
        refused_port = free_port()
        routing = parse_routing(f"""
receivers:
  - name: email
    urls: ["mailto://127.0.0.1:{smtp.port}?from=alerts@nakhon.local&to=flood@chiangmai.go.th&mode=insecure"]
  - name: webhook
    urls: ["json://127.0.0.1:{hook.port}/hook"]
    language: en
  - name: broken
    urls: ["json://robot:{secret}@127.0.0.1:{failing.port}/hook"]
  - name: refused
    urls: ["json://127.0.0.1:{refused_port}/hook?+X-Api-Key={secret}"]
route:
  receiver: email
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 0s
  routes:
    - {{match: {{feed: flood}}, receiver: broken, continue: true}}
    - {{match: {{feed: flood}}, receiver: refused, continue: true}}
    - {{match: {{feed: flood}}, receiver: webhook, continue: true}}
    - {{match: {{feed: flood}}, receiver: email}}
""")
        pipeline = NotificationPipeline(
            routing,
            build_notifiers(routing),
            store,
            clock=clock,
            renderer=Renderer("https://nakhon.cm.go.th"),
            retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.5, timeout_s=10),
        )
        sink = PointSink()
        engine = RulesEngine(load_rules_dir().subset(["flood_level_overbank"]), store, pipeline, sink, clock=clock)
        gauge = device("P.1", "flood", name="สะพานนวรัฐ")
        started = time.monotonic()
        await engine.process(reading(gauge, T0, level_pct_bank=104.0), gauge)
        clock.set(T0 + minutes(2))
        await engine.process(reading(gauge, T0 + minutes(2), level_pct_bank=105.0), gauge)
        # the healthy receivers are served while the broken ones are still failing and retrying
        while (not hook.received or not smtp.messages) and time.monotonic() - started < 10:
            await asyncio.sleep(0.02)
        assert hook.received and smtp.messages
        assert failing.hits < 3  # served before the broken receiver finished retrying with backoff
        await pipeline.drain(30)
        assert failing.hits == 3

        payload = hook.received[0]
        assert "Overbank" in payload["message"] and "/api/v1/alerts/" in payload["message"]
        assert "สะพานนวรัฐ" in SmtpServer.text(smtp.messages[0])
        assert "2569" in SmtpServer.text(smtp.messages[0])  # Buddhist-era year in the Thai part
        assert SmtpServer.subject(smtp.messages[0]).startswith("[วิกฤต / Critical] แจ้งเตือน / Alert: ")

        app = FastAPI()
        app.include_router(build_router(store, stub_require_role, clock=clock))
        client = TestClient(app)
        resp = client.get("/api/v1/notifications", params={"failed": "true"})
        assert resp.status_code == 200, resp.text
        failed = resp.json()
        assert {n["receiver"] for n in failed} == {"broken", "refused"}
        assert all(n["attempts"] == 3 and n["outcome"] == "failed" for n in failed)
        assert secret not in str(failed)
        sent = client.get("/api/v1/notifications", params={"failed": "false"}).json()
        assert {n["receiver"] for n in sent} == {"email", "webhook"}
    await pipeline.stop()
