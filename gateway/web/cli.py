"""`nakhon users add|list|disable|reset-password`: staff accounts for the web console.

Passwords are never taken as a command-line argument (they would land in shell history and `ps`): they are
prompted for (hidden, twice) or read from the first line of stdin with `--password-stdin`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

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


@contextmanager
def _users(ctx: typer.Context) -> Iterator[UserStore]:
    """The account store; a refusal (unknown user, weak password...) ends the command with its message."""
    try:
        yield UserStore(_registry(ctx))
    except GatewayError as exc:
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
    with _users(ctx) as users:
        user = users.add_user(username, password, role, cities=city or (), lang=lang, actor=_actor())
    scope = ", ".join(user.cities) or "all cities"
    typer.echo(f"user {user.username!r} ({user.role}, {scope}) created / สร้างบัญชีผู้ใช้แล้ว")


@users_app.command("list")
def list_users(ctx: typer.Context) -> None:
    """List staff accounts (never their passwords)."""
    with _users(ctx) as users:
        accounts = users.list_users()
    for user in accounts:
        state = "disabled" if user.disabled else "active"
        typer.echo(f"{user.username}\t{user.role}\t{','.join(user.cities) or '*'}\t{user.lang}\t{state}")


@users_app.command("disable")
def disable_user(ctx: typer.Context, username: str) -> None:
    """Disable an account at once (its sessions end); `reset-password` enables it again."""
    with _users(ctx) as users:
        users.disable(username, actor=_actor())
    typer.echo(f"user {username!r} disabled / ระงับบัญชีแล้ว")


@users_app.command("reset-password")
def reset_password(ctx: typer.Context, username: str, password_stdin: PasswordStdin = False) -> None:
    """Set a new password (ends the account's sessions, clears a lockout, enables a disabled account)."""
    password = _password(password_stdin)
    with _users(ctx) as users:
        users.reset_password(username, password, actor=_actor())
    typer.echo(f"password of {username!r} reset / ตั้งรหัสผ่านใหม่แล้ว")


__all__ = ["users_app"]
