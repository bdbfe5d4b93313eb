"""LINE receiver against a real local HTTP server standing in for the Messaging API push endpoint: a burst goes out
in pushes of 5, a retried push is not delivered twice (X-Line-Retry-Key), 4xx is permanent, Retry-After is honoured,
every message is recorded sent only after the push that carried it was accepted, the token never leaks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from rules.notify.base import NotifyMessage, PermanentNotifyError
from rules.notify.delivery import ReceiverWorker
from rules.notify.line import LineNotifier, line_text, parse_line_url, retry_after_s
from rules.notify.outbox import Candidate, Outbox, new_message_id
from rules.notify.pipeline import build_notifier, build_notifiers
from rules.notify.retry import RetryPolicy
from rules.notify.routing import ReceiverConfig, parse_routing
from rules.store import AlertStore
from rules.timeutil import FakeClock
from tests.rules.conftest import T0
from tests.rules.notify.test_delivery import FakeSleep
from tests.rules.notify.test_pipeline import fire
from tests.rules.receivers import LineServer
from tests.servers import free_port

TOKEN = "Zx9Q/LongLivedChannelToken+abc/def123="  # has "/" and "+", ends in "=" like real long-lived tokens
TARGET = "Cfd0a1b2c3d4e5f60718293a4b5c6d7e8"


def owe(store: AlertStore, n: int, receiver: str = "line") -> list[str]:
    """n owed messages for `receiver`, one firing alert each, oldest first; returns their texts."""
    outbox = Outbox(store.engine)
    texts = []
    for i in range(n):
        alert = fire(store, "flood", f"d-{i:02d}", "water", T0 + i)

        def build(claimed: list[Candidate], i: int = i, alert_id: str = alert.id) -> NotifyMessage:
            return NotifyMessage(
                receiver, f"น้ำท่วม {i:02d}", f"ระดับน้ำสูง · station {i:02d}", "warning", "firing", [alert_id],
                message_id=new_message_id(),
            )

        outbox.enqueue(receiver, f"g{i}", [Candidate(alert.id, "firing")], build, T0 + i)
        texts.append(f"น้ำท่วม {i:02d}\nระดับน้ำสูง · station {i:02d}")
    return texts


async def run_worker(store: AlertStore, clock: FakeClock, notifier: Any, sleep: Any = None) -> ReceiverWorker:
    """The receiver's worker over what the outbox owes, until nothing is owed (bounded), then stopped."""
    worker = ReceiverWorker(
        "line", notifier, Outbox(store.engine), RetryPolicy(initial_backoff_s=1, max_backoff_s=8), clock,
        sleep=sleep or FakeSleep(clock),
    )
    worker.start()
    for _ in range(2000):
        await asyncio.sleep(0.01)
        if worker.idle:
            break
    await worker.stop()
    await notifier.close()
    return worker


def outcomes(store: AlertStore) -> list[tuple[str, int]]:
    return sorted((n.outcome, n.attempts) for n in store.list_notifications())


async def test_a_burst_of_12_owed_messages_arrives_as_3_pushes_of_5_5_2_each_message_once(store, clock) -> None:
    texts = owe(store, 12)
    with LineServer(TOKEN) as line:
        notifier = LineNotifier("line", [f"line://{TOKEN}/{TARGET}"], api_url=line.url)
        await run_worker(store, clock, notifier)
    assert [len(p) for p in line.accepted_pushes] == [5, 5, 2]
    assert len(line.requests) == 3
    assert line.delivered == [(TARGET, t) for t in texts]  # all of them, in order, each exactly once
    assert len({h["x-line-retry-key"] for h, _ in line.requests}) == 3  # one key per push
    assert outcomes(store) == [("sent", 1)] * 12


@pytest.mark.parametrize("accepted_before_failing", [True, False], ids=["answer-lost", "not-accepted"])
async def test_a_500_then_200_retries_with_the_same_key_and_delivers_once(
    store, clock, accepted_before_failing: bool
) -> None:
    texts = owe(store, 3)
    sleep = FakeSleep(clock)
    with LineServer(TOKEN, script=[(500, {}, accepted_before_failing)]) as line:
        notifier = LineNotifier("line", [f"line://{TOKEN}/{TARGET}"], api_url=line.url)
        await run_worker(store, clock, notifier, sleep)
    keys = [h["x-line-retry-key"] for h, _ in line.requests]
    assert len(keys) == 2 and keys[0] == keys[1]  # the retry is the same push
    assert line.delivered == [(TARGET, t) for t in texts]  # once, though the first push may have gone through
    assert sleep.waits == [1]
    assert outcomes(store) == [("sent", 2)] * 3


async def test_a_400_is_permanent_the_batch_fails_without_a_retry(store, clock) -> None:
    owe(store, 2)
    sleep = FakeSleep(clock)
    with LineServer(TOKEN, script=[(400, {}, False)]) as line:
        notifier = LineNotifier("line", [f"line://{TOKEN}/{TARGET}"], api_url=line.url)
        worker = await run_worker(store, clock, notifier, sleep)
    assert len(line.requests) == 1 and line.delivered == [] and sleep.waits == []
    assert outcomes(store) == [("failed", 1)] * 2
    assert all("HTTP 400" in (n.error or "") for n in store.list_notifications())
    assert worker.last_error is not None and "permanent" in worker.last_error


async def test_a_429_waits_as_long_as_retry_after_says(store, clock) -> None:
    texts = owe(store, 1)
    sleep = FakeSleep(clock)
    with LineServer(TOKEN, script=[(429, {"Retry-After": "7"}, False), (503, {}, False)]) as line:
        notifier = LineNotifier("line", [f"line://{TOKEN}/{TARGET}"], api_url=line.url)
        await run_worker(store, clock, notifier, sleep)
    assert sleep.waits == [7, 2]  # Retry-After above the 1 s backoff; then the backoff again (no Retry-After)
    assert line.delivered == [(TARGET, texts[0])]


async def test_a_target_that_failed_does_not_make_the_one_that_accepted_get_it_twice(store, clock) -> None:
    other = "U0123456789abcdef0123456789abcdef"
    texts = owe(store, 2)
    # the first push (to TARGET) is accepted, the second (to `other`) answers 502: the batch is retried as a whole
    with LineServer(TOKEN, script=[(200, {}, True), (502, {}, False)]) as line:
        notifier = LineNotifier("line", [f"line://{TOKEN}/{TARGET}/{other}"], api_url=line.url)
        await run_worker(store, clock, notifier)
    assert sorted(line.delivered) == sorted([(TARGET, t) for t in texts] + [(other, t) for t in texts])
    assert [len(p) for p in line.accepted_pushes] == [2, 2]
    assert outcomes(store) == [("sent", 2)] * 2


async def test_the_token_never_appears_in_logs_or_errors(store, clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    owe(store, 1)
    owe_refused = LineNotifier("line", [f"line://{TOKEN}/{TARGET}"], api_url=f"http://127.0.0.1:{free_port()}")
    errors: list[str] = []
    with LineServer(TOKEN, script=[(500, {}, False), (400, {}, False)], echo_auth=True) as line:
        notifier = LineNotifier("line", [f"line://{TOKEN}/{TARGET}"], api_url=line.url)
        worker = await run_worker(store, clock, notifier)
        errors.append(worker.last_error or "")
    try:
        await owe_refused.send(NotifyMessage("line", "t", "b", "warning", "firing", []))
    except Exception as exc:  # connection refused: retryable, and its text must be clean too
        errors.append(str(exc))
    await owe_refused.close()
    errors += [n.error or "" for n in store.list_notifications()]
    assert len(line.requests) == 2 and any("Bearer ***" in e for e in errors)  # the echoed header, redacted
    assert any("HTTP 400" in e for e in errors) and any("HTTP 500" in m for m in caplog.messages)
    for secret in (TOKEN, "LongLivedChannelToken", "Zx9Q"):
        assert secret not in caplog.text
        assert all(secret not in e for e in errors)
        assert secret not in " ".join(notifier.safe_urls)


async def test_a_wrong_token_is_permanent_and_stays_out_of_the_error() -> None:
    with LineServer(TOKEN, echo_auth=True) as line:
        notifier = LineNotifier("line", [f"line://WrongToken12345678/{TARGET}"], api_url=line.url)
        with pytest.raises(PermanentNotifyError, match="HTTP 401") as err:
            await notifier.send(NotifyMessage("line", "t", "b", "warning", "firing", [], message_id="m1"))
        await notifier.close()
    assert "WrongToken12345678" not in str(err.value) and line.delivered == []


def test_line_urls_token_with_slashes_env_query_forms_and_missing_parts() -> None:
    assert parse_line_url(f"line://{TOKEN}/{TARGET}") == (TOKEN, [TARGET])
    assert parse_line_url(f"line://Tok123456/{TARGET}/U1?to=R2,R3") == ("Tok123456", [TARGET, "U1", "R2", "R3"])
    assert parse_line_url(f"line://?token=Tok123456&to={TARGET}") == ("Tok123456", [TARGET])
    env = {"LINE_TOKEN": TOKEN, "NAKHON_LINE_API_URL": "http://127.0.0.1:9"}
    built = build_notifier(ReceiverConfig(name="l", urls=[f"line://${{LINE_TOKEN}}/{TARGET}"]), env=env)
    assert isinstance(built, LineNotifier) and built.config_error is None
    assert built.endpoint == "http://127.0.0.1:9/v2/bot/message/push"
    assert LineNotifier("l", [f"line://{TOKEN}/{TARGET}"], env={}).endpoint == "https://api.line.me/v2/bot/message/push"
    assert LineNotifier("l", ["line://Tok123456"], env={}).config_error is not None  # no target to push to


async def test_a_bad_url_fails_permanently_without_a_request() -> None:
    notifier = LineNotifier("l", ["line://Tok123456"], env={})
    with pytest.raises(PermanentNotifyError, match="names no user"):
        await notifier.send(NotifyMessage("l", "t", "b", "warning", "firing", []))
    await notifier.close()
    assert notifier.pushes == 0


def test_text_is_title_then_body_cut_to_5000_utf16_units() -> None:
    short = NotifyMessage("l", "น้ำท่วม", "ระดับน้ำ 3.2 ม.", "warning", "firing", [])
    assert line_text(short) == "น้ำท่วม\nระดับน้ำ 3.2 ม."
    long = NotifyMessage("l", "t", "😀" * 3000, "warning", "firing", [])  # 6,002 UTF-16 units
    text = line_text(long)
    assert len(text.encode("utf-16-le")) // 2 <= 5000 and text.endswith("…")


def test_retry_after_as_seconds_or_http_date() -> None:
    assert retry_after_s("30") == 30.0
    assert retry_after_s("Wed, 02 Dec 2026 01:00:10 GMT", now=1796173200.0) == 10.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None


async def test_a_storm_through_the_pipeline_reaches_line_once_each_in_batched_pushes(
    store, clock, pipeline_factory
) -> None:
    """The shipped wiring: routing file -> build_notifiers (token and API base from the environment) -> worker. The
    first push answers 503 and the retry waits until the whole storm is owed, so batching is certain, not luck."""
    submitted = asyncio.Event()

    async def sleep(_: float) -> None:
        await submitted.wait()

    with LineServer(TOKEN, script=[(503, {}, False)]) as line:
        routing_yaml = f"""
receivers:
  - {{name: line, urls: ["line://${{LINE_TOKEN}}/{TARGET}"]}}
route: {{receiver: line, group_by: [rule, device_id], group_wait: 0s, group_interval: 1m}}
"""
        env = {"LINE_TOKEN": TOKEN, "NAKHON_LINE_API_URL": line.url}
        notifiers = build_notifiers(parse_routing(routing_yaml), env=env)
        pipe, _ = pipeline_factory(routing_yaml, notifiers=notifiers, sleep=sleep)
        for i in range(12):
            await pipe.submit(fire(store, "flood", f"d-{i:02d}", "water", T0))
        submitted.set()
        await pipe.drain()
        await pipe.stop()
    texts = [t for _, t in line.delivered]
    assert len(texts) == 12 and len(set(texts)) == 12  # every alert's message, none twice
    assert all(any(f"d-{i:02d}" in t for t in texts) for i in range(12))
    # the failed push and its retry, then the other 7..11 in pushes of 5: at most 5 requests for 12 messages
    assert len(line.requests) <= 5 and all(len(p) <= 5 for p in line.accepted_pushes)
    assert sorted(n.outcome for n in store.list_notifications()) == ["sent"] * 12
