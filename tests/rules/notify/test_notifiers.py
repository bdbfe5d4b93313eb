"""The notifiers against real receivers: our SMTP client (one connection per burst, SMTP codes), our webhook client
(HTTP status classes), apprise without its generic throttle."""

from __future__ import annotations

from typing import Any

import apprise
import pytest

from rules.notify.apprise_notifier import AppriseNotifier
from rules.notify.base import NotifyMessage, PermanentNotifyError, RetryableNotifyError
from rules.notify.line import LineNotifier
from rules.notify.pipeline import build_notifier
from rules.notify.routing import ReceiverConfig
from rules.notify.smtp import SmtpNotifier
from rules.notify.webhook import WebhookNotifier
from tests.rules.receivers import SmtpServer, WebhookServer
from tests.servers import free_port


def message(i: int = 0, **kw: Any) -> NotifyMessage:
    base: dict[str, Any] = dict(
        receiver="r",
        title=f"[วิกฤต] น้ำล้นตลิ่ง P.{i}",
        body=f"ระดับน้ำ 104% ของตลิ่ง #{i}",
        severity="critical",
        kind="firing",
        alert_ids=[f"a{i}"],
        message_id=f"m{i}",
    )
    base.update(kw)
    return NotifyMessage(**base)


def mailto(port: int, extra: str = "") -> str:
    return f"mailto://127.0.0.1:{port}?from=alerts@nakhon.local&to=ops@chiangmai.go.th&mode=insecure{extra}"


async def test_a_burst_of_emails_goes_over_one_smtp_connection() -> None:
    with SmtpServer() as smtp:
        notifier = SmtpNotifier("email", [mailto(smtp.port)])
        for i in range(20):
            await notifier.send(message(i))
        await notifier.close()
    assert smtp.subjects() == [f"[วิกฤต] น้ำล้นตลิ่ง P.{i}" for i in range(20)]
    assert len(smtp.sessions) == 1 and notifier.connections_opened == 1
    assert smtp.envelopes[0].rcpt_tos == ["ops@chiangmai.go.th"]
    assert "ระดับน้ำ 104% ของตลิ่ง #0" in SmtpServer.text(smtp.messages[0])


async def test_a_kept_connection_the_server_dropped_is_opened_again() -> None:
    port = free_port()
    notifier = SmtpNotifier("email", [mailto(port)])
    with SmtpServer(port=port) as first:
        await notifier.send(message(1))
    with SmtpServer(port=port) as second:  # the server restarted: our kept connection is dead
        await notifier.send(message(2))
    await notifier.close()
    assert len(first.messages) == 1 and len(second.messages) == 1


async def test_smtp_550_is_permanent_and_names_the_code() -> None:
    with SmtpServer(reject_rcpt="550 5.1.1 mailbox unavailable") as smtp:
        notifier = SmtpNotifier("email", [mailto(smtp.port)])
        with pytest.raises(PermanentNotifyError, match=r"SMTP 550 5\.1\.1 mailbox unavailable"):
            await notifier.send(message())
        await notifier.close()
    assert smtp.messages == []


async def test_smtp_451_is_retryable_and_smtp_down_is_retryable() -> None:
    with SmtpServer(reject_rcpt="451 4.3.0 try again later") as smtp:
        notifier = SmtpNotifier("email", [mailto(smtp.port)])
        with pytest.raises(RetryableNotifyError, match="SMTP 451"):
            await notifier.send(message())
        await notifier.close()
    down = SmtpNotifier("email", [mailto(free_port())])
    with pytest.raises(RetryableNotifyError, match="ConnectionRefused"):
        await down.send(message())


async def test_smtp_password_never_appears_in_errors() -> None:
    secret = "Pa55word-Very-Secret"
    down = SmtpNotifier("email", [f"mailto://ops:{secret}@127.0.0.1:{free_port()}?to=a@b.go.th&mode=insecure"])
    with pytest.raises(RetryableNotifyError) as info:
        await down.send(message())
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (200, None),
        (204, None),
        (500, RetryableNotifyError),
        (503, RetryableNotifyError),
        (408, RetryableNotifyError),
        (429, RetryableNotifyError),
        (400, PermanentNotifyError),
        (401, PermanentNotifyError),
        (404, PermanentNotifyError),
        (410, PermanentNotifyError),
    ],
)
async def test_webhook_answers_are_classified_with_the_status_in_the_error(status: int, error: Any) -> None:
    with WebhookServer(status=status) as hook:
        notifier = WebhookNotifier("hook", [f"json://127.0.0.1:{hook.port}/hook"])
        if error is None:
            await notifier.send(message(payload={"version": "1"}))
        else:
            with pytest.raises(error, match=f"HTTP {status}"):
                await notifier.send(message())
        await notifier.close()
    assert hook.hits == 1
    if error is None:
        assert hook.received == [{"version": "1", "title": message().title, "message": message().body}]


async def test_webhook_refused_connection_is_retryable_and_secrets_stay_out() -> None:
    secret = "HookToken-998877"
    notifier = WebhookNotifier("hook", [f"json://robot:{secret}@127.0.0.1:{free_port()}/hook?+X-Api-Key={secret}"])
    with pytest.raises(RetryableNotifyError) as info:
        await notifier.send(message())
    assert secret not in str(info.value)
    await notifier.close()


async def test_webhook_sends_headers_and_basic_auth_from_the_url() -> None:
    with WebhookServer() as hook:
        notifier = WebhookNotifier("hook", [f"json://robot:pw@127.0.0.1:{hook.port}/hook?+X-Api-Key=k1"])
        await notifier.send(message())
        await notifier.close()
    assert hook.headers[0]["X-Api-Key"] == "k1" and hook.headers[0]["Authorization"].startswith("Basic ")


def test_each_url_kind_gets_its_notifier() -> None:
    assert isinstance(build_notifier(ReceiverConfig(name="e", urls=[mailto(25)])), SmtpNotifier)
    assert isinstance(build_notifier(ReceiverConfig(name="w", urls=["json://127.0.0.1:1/h"])), WebhookNotifier)
    line = build_notifier(ReceiverConfig(name="l", urls=["line://Token1234567890/U1234567890abcdef"]))
    assert isinstance(line, LineNotifier)
    mixed = ["line://Token1234567890/U1234567890abcdef", "tgram://123456789:ABCdefGHIjkl/12345"]
    assert isinstance(build_notifier(ReceiverConfig(name="m", urls=mixed)), AppriseNotifier)


def test_apprise_generic_throttle_is_off_but_a_plugins_own_rate_stays() -> None:
    notifier = AppriseNotifier(
        "chat", ["line://Token1234567890/U1234567890abcdef", "tgram://123456789:ABCdefGHIjkl/12345"]
    )
    rates = {type(p).__name__: p.request_rate_per_sec for p in notifier._apprise}
    assert apprise.NotifyBase.request_rate_per_sec > 1  # what apprise would wait between two LINE messages
    assert rates["NotifyLine"] == 0
    telegram = next(p for p in notifier._apprise if type(p).__name__ == "NotifyTelegram")
    assert rates["NotifyTelegram"] == type(telegram).request_rate_per_sec  # Telegram's own limit is kept


async def test_apprise_sends_back_to_back_without_pausing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four messages through apprise to one receiver (a real local endpoint): apprise never sleeps between them."""
    import apprise.url

    pauses: list[float] = []
    real_sleep = apprise.url.time.sleep
    monkeypatch.setattr(apprise.url.time, "sleep", lambda s: (pauses.append(s), real_sleep(0))[1])
    with WebhookServer() as hook:
        notifier = AppriseNotifier("hook", [f"form://127.0.0.1:{hook.port}/hook"])
        for i in range(4):
            await notifier.send(message(i))
    assert hook.hits == 4
    assert pauses == []  # with apprise's default each of the last three would wait ~5.5 s
