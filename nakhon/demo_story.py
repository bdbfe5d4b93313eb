"""The demo's incident, end to end: what a visitor sees in the first minute of `nakhon demo`.

- Simulated time runs `speed` times faster (default 60: a minute is an hour) on one `SimClock` shared by the
  simulated city and the rules engine, starting in the past and catching up with the real clock, so `for:`,
  heartbeats and reminders are judged on the same time as the readings (no bus is "silent" because its
  readings carry simulated times).
- Two incidents are placed early: a child left on a school van (ignition off, one child counted, for 20 simulated
  minutes) and one canal gauge rising over its bank. Nothing else is scheduled, so the alerts shown are real.
- The notification goes to one receiver, the duty officer (Thai and English), whose inbox the demo shows as
  the message arrives; the duty officer then opens the signed link in it (GET: the confirm page) and presses
  the button (POST), as a person would — the alert is acknowledged as `link:duty-officer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nakhon.sim.city import SimDevice
from nakhon.sim.signals import Incident, make_incident
from rules.notify.base import NotifyMessage

log = logging.getLogger(__name__)

RECEIVER = "duty-officer"
CATCH_UP_S = 600.0  # without --duration: simulated time reaches the real now after 10 minutes
CHILD_LEFT_AT_S = 3 * 60  # simulated seconds after the start
CANAL_RISE_AT_S = 2 * 60
ACK_COMMENT = "ตรวจรถแล้ว พบเด็ก 1 คน ปลอดภัย ส่งผู้ปกครองแล้ว / Checked: one child found safe, handed to the parents"

ROUTING_YAML = f"""\
# The demo's routing: one duty officer, Thai and English, no waiting (written by nakhon/demo_story.py).
receivers:
  - {{name: {RECEIVER}, language: both}}
route:
  receiver: {RECEIVER}
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 30m
"""

_ACK_URL = re.compile(r"https?://\S+/ack-link\?\S+")


def write_routing(data_dir: Path) -> Path:
    path = data_dir / "demo-routing.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ROUTING_YAML, encoding="utf-8")
    return path


def story_incidents(devices: list[SimDevice], start_ms: int) -> list[Incident]:
    """The two incidents of the demo, on the first bus and the first canal gauge (deterministic)."""
    out: list[Incident] = []
    bus = next((d for d in devices if d.feed == "bus"), None)
    if bus is not None:
        child = make_incident(
            "child_left", devices, start_ms + CHILD_LEFT_AT_S * 1000, duration_s=20 * 60, device_id=bus.device_id
        )
        if child is not None:
            out.append(child)
    gauge = next((d for d in devices if d.feed == "flood" and d.kind == "canal"), None)
    gauge = gauge or next((d for d in devices if d.feed == "flood"), None)
    if gauge is not None:
        rise = make_incident(
            "canal_rise", devices, start_ms + CANAL_RISE_AT_S * 1000, duration_s=3 * 3600, device_id=gauge.device_id
        )
        if rise is not None:
            out.append(rise)
    return out


class DemoInbox:
    """The duty officer's phone: every message as it was delivered (title and body), newest last (bounded)."""

    def __init__(self, name: str = RECEIVER, keep: int = 50) -> None:
        self.name = name
        self.messages: deque[NotifyMessage] = deque(maxlen=keep)
        self.delivered = 0
        self.arrived = asyncio.Event()

    async def send(self, message: NotifyMessage) -> None:
        self.messages.append(message)
        self.delivered += 1
        self.arrived.set()


@dataclass
class DutyOfficer:
    """Acknowledges the first child-left message through the signed link in it, as a person would."""

    inbox: DemoInbox
    ack_after_s: float = 3.0
    log_lines: list[str] = field(default_factory=list)
    acknowledged: int = 0
    page_seen: bool = False

    def link_in(self, message: NotifyMessage) -> str | None:
        match = _ACK_URL.search(message.body)
        return match.group(0) if match else None

    async def run(self, stop: asyncio.Event) -> None:
        import httpx

        done: set[str] = set()
        while not stop.is_set():
            self.inbox.arrived.clear()
            for message in list(self.inbox.messages):
                if message.kind != "firing" or message.message_id in done:
                    continue
                if not any(a.get("rule") == "bus_child_left" for a in message.payload.get("alerts", [])):
                    continue
                done.add(message.message_id)
                url = self.link_in(message)
                if url is None:
                    continue
                await _wait(stop, self.ack_after_s)
                try:
                    async with httpx.AsyncClient(timeout=10) as client:
                        await self._acknowledge(client, url)
                except (httpx.HTTPError, OSError) as exc:
                    self.log_lines.append(f"duty officer: the link did not open ({type(exc).__name__})")
            await _wait_event(self.inbox.arrived, stop, 1.0)

    async def _acknowledge(self, client: Any, url: str) -> None:
        page = await client.get(url)  # what the phone shows on opening the link: changes nothing
        self.page_seen = page.status_code == 200 and "รับทราบ / Acknowledge" in page.text
        base, _, query = url.partition("?")
        form = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        from urllib.parse import unquote

        fields = {k: unquote(v) for k, v in form.items()}
        fields["comment"] = ACK_COMMENT
        done = await client.post(base, data=fields)
        if done.status_code == 200 and "รับทราบแล้ว ขอบคุณ" in done.text:  # the "done" page, not "already"
            self.acknowledged += 1
            self.log_lines.append("duty officer opened the link in the message and pressed รับทราบ / Acknowledge")
        else:
            self.log_lines.append(f"duty officer: acknowledging through the link answered {done.status_code}")


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_event(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    if stop.is_set():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def message_text(message: NotifyMessage, max_lines: int = 14) -> str:
    """The message as the phone shows it: subject, then the body (Thai first), cut to fit the terminal."""
    lines = [message.title, "", *message.body.splitlines()]
    return "\n".join(lines[:max_lines] + (["…"] if len(lines) > max_lines else []))


__all__ = [
    "CATCH_UP_S",
    "RECEIVER",
    "DemoInbox",
    "DutyOfficer",
    "message_text",
    "story_incidents",
    "write_routing",
]
