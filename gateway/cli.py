"""`nakhon devices ...` and `nakhon tokens ...`: typer apps the app shell mounts.

The shell supplies, in `ctx.obj`:
    "registry":    () -> RegistryStore
    "provisioner": () -> Provisioner | None   (optional; None when no broker is configured)
    "reserved_ids": () -> set of str          (optional; the configured broker service names)
Secrets (device passwords, API tokens) are printed once, to stdout, and never logged.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from core.time import BANGKOK
from gateway.broker.dynsec import Provisioner
from gateway.errors import FieldProblem, GatewayError, InvalidInputError
from gateway.registry.schemas import ROLES, DeviceOut, DeviceSpec, MaintenanceSpec
from gateway.registry.store import RegistryStore
from gateway.service import NOTE_EN, NOTE_TH, DeviceService, IssuedCredentials

T = TypeVar("T")

devices_app = typer.Typer(help="Register and manage devices / จัดการอุปกรณ์", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens / โทเค็น API", no_args_is_help=True)



def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def _registry(ctx: typer.Context) -> RegistryStore:
    obj = ctx.obj or {}
    factory = obj.get("registry")
    if factory is None:
        _fail_text("the registry is not configured (ctx.obj['registry'] is missing)", "ยังไม่ได้ตั้งค่าฐานข้อมูลทะเบียน")
    store: RegistryStore = factory()
    store.migrate()  # idempotent and quick; a first run on a new data dir just works
    return store


def _provisioner(ctx: typer.Context) -> Provisioner | None:
    factory = (ctx.obj or {}).get("provisioner")
    return factory() if factory is not None else None


def _fail_text(message: str, message_th: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}\nข้อผิดพลาด: {message_th}", err=True)
    raise typer.Exit(code)


def _fail(exc: GatewayError) -> NoReturn:
    lines = [f"error: {exc.message}", f"ข้อผิดพลาด: {exc.message_th}"]
    if isinstance(exc, InvalidInputError):
        lines = [f"error: invalid input / {exc.message_th}"] + [f"  - {p}" for p in exc.problems]
    typer.echo("\n".join(lines), err=True)
    raise typer.Exit(2 if isinstance(exc, InvalidInputError) else 1)


def _run(ctx: typer.Context, work: Callable[[DeviceService], Awaitable[T]]) -> T:
    """Run one service operation, with the provisioner's connection opened and closed in the same loop."""
    store = _registry(ctx)
    provisioner = _provisioner(ctx)

    async def main() -> T:
        try:
            reserved_ids = (ctx.obj or {}).get("reserved_ids")  # () -> names no device may have
            reserved = frozenset(reserved_ids()) if reserved_ids is not None else frozenset()
            return await work(DeviceService(store, provisioner, reserved_ids=reserved))
        finally:
            if provisioner is not None:
                await provisioner.close()

    try:
        return asyncio.run(main())
    except GatewayError as exc:
        _fail(exc)


def _problems(exc: ValidationError) -> InvalidInputError:
    return InvalidInputError(
        [FieldProblem(".".join(str(p) for p in e["loc"]) or "input", e["msg"]) for e in exc.errors()]
    )


def _print_credentials(credentials: IssuedCredentials) -> None:
    typer.echo(f"MQTT username: {credentials.username}")
    typer.echo(f"MQTT client id: {credentials.client_id} (the only one this account may connect with)")
    typer.echo(f"MQTT password: {credentials.password}")
    typer.echo(f"publish topic: {credentials.topic}")
    typer.echo(NOTE_EN)
    typer.echo(NOTE_TH)


def _show(device: DeviceOut) -> None:
    data = device.model_dump()
    width = max(len(k) for k in data)
    for key, value in data.items():
        if isinstance(value, datetime):  # stored in UTC, shown in Bangkok time
            shown: Any = value.astimezone(BANGKOK).isoformat(timespec="seconds")
        elif isinstance(value, dict | list):
            shown = json.dumps(value, ensure_ascii=False, default=str)
        else:
            shown = value
        typer.echo(f"{key.ljust(width)}  {'' if shown is None else shown}")


def _parse_site(pairs: list[str]) -> dict[str, Any]:
    site: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            problems.append(FieldProblem("site", "write KEY=VALUE, e.g. bank_level_m=3.7", value=pair))
            continue
        try:
            site[key.strip()] = float(value)
        except ValueError:
            problems.append(FieldProblem(f"site.{key.strip()}", "must be a number", value=value))
    if problems:
        raise InvalidInputError(problems)
    return site


@devices_app.command("add")
def add_device(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="Device id: letters, digits, _ . - (also its MQTT username)")],
    feed: Annotated[str, typer.Option(help="air | flood | energy | bus")],
    city: Annotated[str, typer.Option(help="City id as used in topics, e.g. chiangmai")],
    district: Annotated[str, typer.Option(help="District / อำเภอ")],
    name: Annotated[str, typer.Option(help="Display name")] = "",
    lat: Annotated[float | None, typer.Option()] = None,
    lon: Annotated[float | None, typer.Option()] = None,
    dev_eui: Annotated[str | None, typer.Option(help="LoRaWAN DevEUI, 16 hex digits")] = None,
    profile: Annotated[str | None, typer.Option(help="Device profile name")] = None,
    site: Annotated[list[str] | None, typer.Option(help="Site value KEY=VALUE, repeatable")] = None,
    heartbeat_s: Annotated[int | None, typer.Option(help="Expected reporting interval, s")] = None,
) -> None:
    """Register a device; with a broker configured, issue its MQTT password (printed once)."""
    problems: list[FieldProblem] = []
    site_values: dict[str, Any] = {}
    try:
        site_values = _parse_site(site or [])
    except InvalidInputError as exc:
        problems.extend(exc.problems)
    try:
        spec = DeviceSpec.model_validate(
            {
                "device_id": device_id,
                "feed": feed,
                "city": city,
                "district": district,
                "name": name,
                "lat": lat,
                "lon": lon,
                "dev_eui": dev_eui,
                "profile": profile,
                "site": site_values,
                "heartbeat_s": heartbeat_s,
            }
        )
    except ValidationError as exc:
        _fail(InvalidInputError(problems + _problems(exc).problems))
    if problems:
        _fail(InvalidInputError(problems))
    device, credentials = _run(ctx, lambda service: service.create_device(spec, actor=_actor()))
    typer.echo(f"registered {device.device_id} ({device.feed}, {device.city}/{device.district})")
    if credentials is not None:
        _print_credentials(credentials)
    else:
        typer.echo("no MQTT broker configured: no credentials issued (run `rotate-credentials` once it is)")
        typer.echo("ยังไม่ได้ตั้งค่าโบรกเกอร์ MQTT จึงยังไม่ได้ออกรหัส")


@devices_app.command("show")
def show_device(
    ctx: typer.Context,
    device_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show one device."""
    try:
        device = _registry(ctx).devices.get(device_id)
    except GatewayError as exc:
        _fail(exc)
    if as_json:
        typer.echo(device.model_dump_json(indent=2))
    else:
        _show(device)


@devices_app.command("list")
def list_devices(
    ctx: typer.Context,
    city: Annotated[str | None, typer.Option()] = None,
    district: Annotated[str | None, typer.Option()] = None,
    feed: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option(help="active | retired")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List devices (filters and paging)."""
    page = _registry(ctx).devices.find(
        city=city, district=district, feed=feed, status=status, limit=limit, offset=offset
    )
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    for device in page.items:
        flags = " [maintenance]" if device.in_maintenance else ""
        typer.echo(
            f"{device.device_id}\t{device.feed}\t{device.city}\t{device.district}\t{device.status}{flags}\t{device.name}"
        )
    shown = len(page.items)
    typer.echo(f"{shown} of {page.total} device(s) (offset {page.offset})", err=True)


@devices_app.command("import")
def import_devices(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV file (UTF-8)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and count, change nothing")] = False,
) -> None:
    """Upsert devices from CSV: good rows are saved, bad rows are listed by line and column (exit code 1)."""
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(InvalidInputError([FieldProblem("file", f"not UTF-8 text (byte {exc.start}); save the CSV as UTF-8")]))
    report = _run(ctx, lambda service: service.import_csv(text, actor=_actor(), atomic=False, dry_run=dry_run))
    verb = "would import" if dry_run else "imported"
    typer.echo(
        f"{verb}: {report.created} created, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.rejected} row(s) rejected of {report.rows}"
    )
    typer.echo(
        f"สร้าง {report.created} แก้ไข {report.updated} ไม่เปลี่ยนแปลง {report.unchanged} ปฏิเสธ {report.rejected} แถว"
    )
    for error in report.errors:
        typer.echo(f"  line {error['row']}, field {error['field']!r}: {error['message']}", err=True)
    if report.errors:
        raise typer.Exit(1)


@devices_app.command("maintenance")
def maintenance(
    ctx: typer.Context,
    device_id: str,
    until: Annotated[str | None, typer.Option(help="End time with offset, e.g. 2026-11-22T08:00:00+07:00")] = None,
    hours: Annotated[float | None, typer.Option(min=0.0, max=24 * 366, help="Or: for this many hours from now")] = None,
    end: Annotated[bool, typer.Option("--end", help="End maintenance now")] = False,
) -> None:
    """Put a device in maintenance until a time (it ends by itself), or end it."""
    chosen = sum(x is not None and x is not False for x in (until, hours, end))
    if chosen != 1:
        _fail(InvalidInputError([FieldProblem("until", "give exactly one of --until, --hours or --end")]))
    end_at: datetime | None
    if end:
        end_at = None
    elif hours is not None:
        end_at = datetime.now(UTC) + timedelta(hours=hours)
    else:
        try:
            end_at = MaintenanceSpec.model_validate({"until": until}).until
        except ValidationError as exc:
            _fail(_problems(exc))
    try:
        device = _registry(ctx).devices.set_maintenance(device_id, end_at, actor=_actor())
    except GatewayError as exc:
        _fail(exc)
    if device.maintenance_until and device.in_maintenance:
        until_at = device.maintenance_until
        until_at = until_at if until_at.tzinfo is not None else until_at.replace(tzinfo=UTC)  # stored UTC
        typer.echo(f"{device_id} in maintenance until {until_at.astimezone(BANGKOK):%Y-%m-%d %H:%M} (Asia/Bangkok)")
    else:
        typer.echo(f"{device_id} is not in maintenance")


@devices_app.command("city-name")
def city_name(
    ctx: typer.Context,
    city: str,
    th: Annotated[str, typer.Option("--th", help="Thai name, e.g. แหลมฉบัง")] = "",
    en: Annotated[str, typer.Option("--en", help="English name, e.g. Laem Chabang")] = "",
) -> None:
    """Name a city for the messages people read (alerts show "แหลมฉบัง", not the slug laem-chabang)."""
    try:
        _registry(ctx).cities.set(city, th, en, actor=_actor())
    except GatewayError as exc:
        _fail(exc)
    typer.echo(f"{city}: {th or '-'} / {en or '-'}")


@devices_app.command("rotate-credentials")
def rotate_credentials(ctx: typer.Context, device_id: str) -> None:
    """Issue a new MQTT password (the old one stops working at once). Printed once."""
    credentials = _run(ctx, lambda service: service.rotate_credentials(device_id, actor=_actor()))
    _print_credentials(credentials)


@devices_app.command("retire")
def retire(ctx: typer.Context, device_id: str) -> None:
    """Retire a device: its MQTT account is removed from the broker at once; history is kept."""
    device = _run(ctx, lambda service: service.retire_device(device_id, actor=_actor()))
    typer.echo(f"{device.device_id} retired / ปลดระวางแล้ว")


@devices_app.command("reconcile")
def reconcile_devices(
    ctx: typer.Context,
    fix: Annotated[bool, typer.Option("--fix", help="Repair every difference that can be repaired (audited)")] = False,
) -> None:
    """Compare the registry with the broker's device accounts, print every difference; exit 1 if any is left."""
    report = _run(ctx, lambda service: service.reconcile(fix=fix, actor=_actor()))
    for difference in report.differences:
        typer.echo(str(difference))
    left = len(report.unfixed)
    typer.echo(
        f"{len(report.differences)} difference(s), {left} not fixed / พบความต่าง {len(report.differences)} รายการ "
        f"ยังไม่ได้แก้ {left} รายการ",
        err=True,
    )
    if left:
        raise typer.Exit(1)


@tokens_app.command("create")
def create_token(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help=" | ".join(ROLES))],
    name: Annotated[str, typer.Option(help="Who or what uses it (recorded in the audit log)")],
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", help="Refused after this many days (default: no expiry)")
    ] = None,
    city: Annotated[
        list[str] | None, typer.Option("--city", help="Limit to this city (repeat for several; default: all)")
    ] = None,
) -> None:
    """Create an API token; it is printed once and only its hash is kept."""
    from gateway.registry.schemas import TokenSpec

    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    try:
        spec = TokenSpec.model_validate({"name": name, "role": role, "expires_at": expires, "cities": city or None})
        _record, token = _registry(ctx).tokens.create(
            spec.name, spec.role, actor=_actor(), expires_at=spec.expires_at, cities=spec.cities
        )
    except ValidationError as exc:
        _fail(_problems(exc))
    except GatewayError as exc:
        _fail(exc)
    typer.echo(token)
    typer.echo(f"token {name!r} ({role}) created; it is shown only once / โทเค็นจะแสดงเพียงครั้งเดียว", err=True)


@tokens_app.command("list")
def list_tokens(ctx: typer.Context) -> None:
    """List API tokens (names and roles; never the tokens)."""
    now = datetime.now(UTC)
    for token in _registry(ctx).tokens.all():
        state = f"revoked {token.revoked_at.isoformat()}" if token.revoked_at else "active"
        if token.revoked_at is None and token.expires_at is not None:
            state = f"expired {token.expires_at.isoformat()}" if token.expires_at <= now else state
        cities = ",".join(token.cities) if token.cities else "all cities"
        used = token.last_used_at.isoformat() if token.last_used_at else "never used"
        typer.echo(f"{token.name}\t{token.role}\t{token.created_at.isoformat()}\t{state}\t{cities}\t{used}")


@tokens_app.command("revoke")
def revoke_token(ctx: typer.Context, name: str) -> None:
    """Revoke an API token at once."""
    try:
        _registry(ctx).tokens.revoke(name, actor=_actor())
    except GatewayError as exc:
        _fail(exc)
    typer.echo(f"token {name!r} revoked / เพิกถอนโทเค็นแล้ว")


__all__ = ["devices_app", "tokens_app"]
