"""`nakhon users add|list|disable|reset-password`: staff accounts for the web console.

Passwords are never taken as a command-line argument (they would land in shell history and `ps`): they are
prompted for (hidden, twice) or read from the first line of stdin with `--password-stdin`.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from gateway.cli import _actor, _fail, _registry
from gateway.errors import GatewayError
from gateway.registry.schemas import ROLES
from gateway.web.users import UserStore

users_app = typer.Typer(help="Staff accounts of the web console / บัญชีผู้ใช้คอนโซล", no_args_is_help=True)

PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("password / รหัสผ่าน", hide_input=True, confirmation_prompt=True))


def _users(ctx: typer.Context) -> UserStore:
    return UserStore(_registry(ctx))


def _failed(exc: GatewayError) -> NoReturn:
    _fail(exc)


@users_app.command("add")
def add_user(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Login name: lower-case letters, digits, . _ -")],
    role: Annotated[str, typer.Option(help=" | ".join(ROLES))],
    city: Annotated[list[str] | None, typer.Option(help="A city they may see (repeat); none: all")] = None,
    lang: Annotated[str, typer.Option(help="th | en (the console's language until they switch)")] = "th",
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a staff account."""
    password = _password(password_stdin)
    try:
        user = _users(ctx).add_user(username, password, role, cities=city or (), lang=lang, actor=_actor())
    except GatewayError as exc:
        _failed(exc)
    scope = ", ".join(user.cities) or "all cities"
    typer.echo(f"user {user.username!r} ({user.role}, {scope}) created / สร้างบัญชีผู้ใช้แล้ว")


@users_app.command("list")
def list_users(ctx: typer.Context) -> None:
    """List staff accounts (never their passwords)."""
    for user in _users(ctx).list_users():
        state = "disabled" if user.disabled else "active"
        typer.echo(f"{user.username}\t{user.role}\t{','.join(user.cities) or '*'}\t{user.lang}\t{state}")


@users_app.command("disable")
def disable_user(ctx: typer.Context, username: str) -> None:
    """Disable an account at once (its sessions end); `reset-password` enables it again."""
    try:
        _users(ctx).disable(username, actor=_actor())
    except GatewayError as exc:
        _failed(exc)
    typer.echo(f"user {username!r} disabled / ระงับบัญชีแล้ว")


@users_app.command("reset-password")
def reset_password(ctx: typer.Context, username: str, password_stdin: PasswordStdin = False) -> None:
    """Set a new password (ends the account's sessions, clears a lockout, enables a disabled account)."""
    password = _password(password_stdin)
    try:
        _users(ctx).reset_password(username, password, actor=_actor())
    except GatewayError as exc:
        _failed(exc)
    typer.echo(f"password of {username!r} reset / ตั้งรหัสผ่านใหม่แล้ว")


__all__ = ["users_app"]
