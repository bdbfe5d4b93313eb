"""Command line: `alerts list|ack|silence add|list|expire` and `rules check DIR` / `rules test RULE --replay FILE`.

The app shell mounts `alerts_app` and `rules_app` and supplies the store: `ctx.obj["alerts_store"]()`.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from core.model import DeviceInfo, Point, Reading
from core.time import BANGKOK, NS
from rules.check import check_rules_dir, load_rules_dir
from rules.engine import RulesEngine
from rules.matchers import Matcher
from rules.store import AlertStore
from rules.timeutil import FakeClock, format_en, ns_from_datetime, parse_duration, to_bangkok

alerts_app = typer.Typer(help="Alerts: list, acknowledge, silence. / การแจ้งเตือน", no_args_is_help=True)
silence_app = typer.Typer(help="Silences: add, list, expire.", no_args_is_help=True)
alerts_app.add_typer(silence_app, name="silence")
rules_app = typer.Typer(help="Rules: check files, replay recorded readings through a rule.", no_args_is_help=True)


def _store(ctx: typer.Context) -> AlertStore:
    obj = ctx.obj or {}
    factory = obj.get("alerts_store") if isinstance(obj, dict) else None
    if factory is None:
        typer.echo("no alerts store configured (ctx.obj['alerts_store'])", err=True)
        raise typer.Exit(2)
    store: AlertStore = factory()
    return store


def _person_time_ns(text: str) -> int:
    """A time a person typed: read in Asia/Bangkok unless it names its offset (people here think in local time)."""
    from datetime import datetime

    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return ns_from_datetime(value if value.tzinfo is not None else value.replace(tzinfo=BANGKOK))


def _now_ns() -> int:
    import time

    return time.time_ns()


@alerts_app.command("list")
def list_alerts(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="pending, firing, resolved or open")] = None,
    severity: Annotated[str | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option("--device", help="device_id")] = None,
    rule: Annotated[str | None, typer.Option()] = None,
    city: Annotated[str | None, typer.Option()] = None,
    feed: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """List alerts (newest first), times in Asia/Bangkok."""
    store = _store(ctx)
    alerts = store.list_alerts(
        state=None if state == "open" else state,
        states=("pending", "firing") if state == "open" else None,
        severity=severity,
        device_id=device,
        rule=rule,
        city=city,
        feed=feed,
        limit=limit,
    )
    for a in alerts:
        if as_json:
            typer.echo(json.dumps(a.to_dict(), ensure_ascii=False))
            continue
        ack = f"  ack: {a.ack_by}" if a.ack_by else ""
        typer.echo(
            f"{a.id}  {a.state:<8} {a.severity:<8} {a.rule}  {a.device_id}  {format_en(a.started_ns)}{ack}\n"
            f"    {a.message_en}\n    {a.message_th}"
        )
    if not alerts and not as_json:
        typer.echo("no alerts / ไม่มีการแจ้งเตือน")


@alerts_app.command("ack")
def ack(
    ctx: typer.Context,
    alert_id: str,
    comment: Annotated[str, typer.Option("--comment", "-c")] = "",
    by: Annotated[str | None, typer.Option("--by", help="who acknowledges (default: the OS user)")] = None,
) -> None:
    """Acknowledge an alert: stops reminders and escalation."""
    store = _store(ctx)
    who, now = by or getpass.getuser(), _now_ns()
    alert = store.ack(alert_id, who, comment, now)
    if alert is None:
        typer.echo(f"no such alert {alert_id}", err=True)
        raise typer.Exit(1)
    when = format_en(alert.ack_ns) if alert.ack_ns is not None else "?"
    if alert.ack_ns != now or alert.ack_by != who[:120]:  # the first acknowledgement stands
        typer.echo(
            f"{alert.id} ({alert.rule} {alert.device_id}) was already acknowledged by {alert.ack_by} at {when}; "
            "your acknowledgement was added as a comment"
        )
        return
    typer.echo(f"acknowledged {alert.id} ({alert.rule} {alert.device_id}) by {alert.ack_by} at {when}")


@silence_app.command("add")
def silence_add(
    ctx: typer.Context,
    match: Annotated[list[str], typer.Option("--match", "-m", help="e.g. device_id=bus-7, severity!=critical")],
    duration: Annotated[str, typer.Option("--duration", "-d")] = "2h",
    start: Annotated[
        str | None, typer.Option(help="ISO-8601 start, Asia/Bangkok unless it has an offset (default now)")
    ] = None,
    by: Annotated[str | None, typer.Option("--by")] = None,
    comment: Annotated[str, typer.Option("--comment", "-c")] = "",
) -> None:
    """Silence notifications of matching alerts for a while (alerts still fire and are recorded)."""
    store = _store(ctx)
    try:
        matchers = [Matcher.parse(m).model_dump() for m in match]
        now = _now_ns()
        starts = _person_time_ns(start) if start else now
        ends = starts + int(parse_duration(duration) * NS)
    except ValueError as exc:
        typer.echo(f"invalid silence: {exc}", err=True)
        raise typer.Exit(2) from exc
    silence = store.add_silence(matchers, starts, ends, by or getpass.getuser(), comment, now)
    typer.echo(f"silence {silence.id} from {format_en(silence.starts_ns)} until {format_en(silence.ends_ns)}")


@silence_app.command("list")
def silence_list(
    ctx: typer.Context, all_: Annotated[bool, typer.Option("--all", help="include expired")] = False
) -> None:
    store = _store(ctx)
    now = _now_ns()
    for s in store.list_silences(None if all_ else now, include_expired=all_):
        matchers = ", ".join(f"{m['name']}{m['op']}{m['value']}" for m in s.matchers)
        state = "active" if s.active(now) else ("pending" if s.starts_ns > now else "expired")
        typer.echo(f"{s.id}  {state:<8} {matchers}  until {format_en(s.ends_ns)}  by {s.created_by}  {s.comment}")


@silence_app.command("expire")
def silence_expire(ctx: typer.Context, silence_id: str) -> None:
    store = _store(ctx)
    if store.expire_silence(silence_id, _now_ns()) is None:
        typer.echo(f"no such silence {silence_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"expired {silence_id}")


@rules_app.command("check")
def check(directory: Path) -> None:
    """Validate every rule file under DIR; errors name the file and line."""
    errors = check_rules_dir(directory)
    for err in errors:
        typer.echo(str(err), err=True)
    if errors:
        raise typer.Exit(1)
    typer.echo(f"ok: {len(load_rules_dir(directory).rules)} rules")


_RESERVED = {"device_id", "feed", "ts", "time", "city", "district", "tags", "name", "profile"}


def _load_devices(path: Path | None) -> dict[str, DeviceInfo]:
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if isinstance(data, dict):
        data = data.get("devices", [])
    return {d["device_id"]: DeviceInfo(**d) for d in data}


class ReplayTimeError(ValueError):
    """A replayed line's time that the collectors would reject (`bad_time`)."""


def replay_time_ns(line: dict[str, Any]) -> int:
    """The line's `ts` (or `time`) read exactly as the collectors read a device's `ts` (RFC 3339 with an offset,
    or epoch s / ms / µs / ns by magnitude): an offset-less time is rejected, not taken as UTC."""
    from collectors.errors import RejectedMessage
    from collectors.formats._common import time_to_ns

    value = line.get("ts", line.get("time"))
    if value is None:
        raise ReplayTimeError("no ts: a replayed reading needs its time")
    try:
        return time_to_ns(value, "ts")
    except RejectedMessage as exc:
        raise ReplayTimeError(exc.detail) from None


async def replay(
    rule_name: str,
    lines: list[dict[str, Any]],
    rules_dir: Path | None,
    devices: dict[str, DeviceInfo],
    step_s: float = 60.0,
) -> list[Point]:
    """Replay recorded readings through one rule; returns the `alerts` points it would emit."""
    ruleset = load_rules_dir(rules_dir).subset([rule_name])
    readings = []
    for line in lines:
        dev_id = str(line["device_id"])
        dev = devices.get(dev_id) or DeviceInfo(
            device_id=dev_id,
            feed=str(line.get("feed", ruleset.rules[0].feed)),
            city=str(line.get("city", "-")),
            district=str(line.get("district", "-")),
            name=str(line.get("name", "")),
            profile=line.get("profile"),
        )
        devices.setdefault(dev_id, dev)
        fields = {k: v for k, v in line.items() if k not in _RESERVED}
        t = replay_time_ns(line)
        readings.append(
            (Reading(dev_id, dev.feed, dev.city, dev.district, t, fields, dict(line.get("tags") or {})), dev)
        )
    readings.sort(key=lambda rd: rd[0].time_ns)
    points: list[Point] = []

    async def emit(point: Point) -> None:
        points.append(point)

    clock = FakeClock(readings[0][0].time_ns if readings else 0)
    store = AlertStore("sqlite://")
    engine = RulesEngine(ruleset, store, None, emit, clock=clock, devices=lambda: list(devices.values()))
    await engine.start()
    step = int(step_s * NS)
    for i, (reading, dev) in enumerate(readings):
        if i:
            t = readings[i - 1][0].time_ns + step
            while t < reading.time_ns:
                clock.set(t)
                await engine.tick(t)
                t += step
        clock.set(reading.time_ns)
        await engine.process(reading, dev)
        await engine.tick(reading.time_ns)
    store.close()
    return points


@rules_app.command("test")
def test_rule(
    rule: str,
    replay_file: Annotated[Path, typer.Option("--replay", help="JSON lines: device_id, feed, ts, fields…")],
    rules_dir: Annotated[Path | None, typer.Option("--rules-dir", help="default: the shipped rules")] = None,
    devices_file: Annotated[Path | None, typer.Option("--devices", help="YAML/JSON list of DeviceInfo")] = None,
    step: Annotated[str, typer.Option(help="evaluation interval between readings")] = "1m",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Replay recorded readings through RULE and print the alerts it would raise (like `promtool test rules`)."""
    lines = []
    for n, text in enumerate(replay_file.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError as exc:
            typer.echo(f"{replay_file}:{n}: invalid JSON: {exc}", err=True)
            raise typer.Exit(2) from exc
        if not isinstance(line, dict) or "device_id" not in line:
            typer.echo(f"{replay_file}:{n}: a line is a JSON object with device_id, ts and fields", err=True)
            raise typer.Exit(2)
        try:
            replay_time_ns(line)
        except ReplayTimeError as exc:  # the collectors would quarantine it as bad_time: so does the replay
            typer.echo(f"{replay_file}:{n}: bad_time: {exc}", err=True)
            raise typer.Exit(2) from exc
        lines.append(line)
    try:
        points = asyncio.run(replay(rule, lines, rules_dir, _load_devices(devices_file), parse_duration(step)))
    except KeyError as exc:
        typer.echo(f"no rule named {rule}", err=True)
        raise typer.Exit(2) from exc
    for p in points:
        if as_json:
            typer.echo(
                json.dumps({"time": to_bangkok(p.time_ns).isoformat(), **p.tags, **p.fields}, ensure_ascii=False)
            )
        else:
            typer.echo(
                f"{to_bangkok(p.time_ns):%Y-%m-%d %H:%M:%S%z}  {str(p.fields['state']).upper():<8} "
                f"{p.tags['rule']}  {p.tags['device_id']}  value={p.fields['value']:g}  {p.fields['message_en']}"
            )
    if not points and not as_json:
        typer.echo("no alerts")
    sys.stdout.flush()


@alerts_app.command("notifications")
def list_notifications(
    ctx: typer.Context,
    failed: Annotated[
        bool, typer.Option("--failed", help="only failed, expired or still failing (retrying) deliveries")
    ] = False,
    receiver: Annotated[str | None, typer.Option()] = None,
    alert: Annotated[str | None, typer.Option("--alert", help="alert id")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """The notification log (newest first): receiver, event, outcome, attempts, error; times in Asia/Bangkok."""
    store = _store(ctx)
    notes = store.list_notifications(receiver=receiver, alert_id=alert, limit=limit if not failed else 100_000)
    if failed:
        notes = [n for n in notes if n.outcome in ("failed", "expired", "retrying")][:limit]
    for n in notes:
        if as_json:
            typer.echo(json.dumps(n.to_dict(), ensure_ascii=False))
            continue
        typer.echo(
            f"{format_en(n.updated_ns)}  {n.receiver:<16} {n.kind:<14} {n.outcome:<9} attempts={n.attempts:<3} "
            f"alert={n.alert_id}" + (f"  {n.error}" if n.error else "")
        )
    if not notes and not as_json:
        typer.echo("no notifications / ไม่มีรายการ")
