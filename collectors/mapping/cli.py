"""`nakhon profiles list|show|check`: the device profiles the collectors load (shipped + `[domain] profiles_dir`).

The app shell mounts `profiles_app` and supplies the settings: `ctx.find_root().obj["settings"]()`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from collectors.mapping.profiles import (
    BUILTIN_DIR,
    Profile,
    ProfileError,
    builtin_profiles,
    check_profiles,
    load_profile,
)

profiles_app = typer.Typer(help="Device profiles: vendor field names and units to canonical fields.",
                           no_args_is_help=True)


def _profiles_dir(ctx: typer.Context) -> Path | None:
    obj = ctx.find_root().obj or {}
    settings = obj.get("settings")
    if settings is None:
        return None
    directory: Path | None = settings().domain.profiles_dir
    return directory


def _loaded(ctx: typer.Context) -> dict[str, tuple[Profile, str]]:
    """Every loaded profile with where it came from; a bad configured file is an error naming it (exit 2)."""
    loaded = {name: (p, f"shipped ({BUILTIN_DIR / name}.yaml)") for name, p in builtin_profiles().items()}
    directory = _profiles_dir(ctx)
    if directory is not None:
        profiles, errors = check_profiles(directory)
        if errors:
            for error in errors:
                typer.echo(error, err=True)
            raise typer.Exit(2)
        loaded.update({name: (p, str(directory)) for name, p in profiles.items()})
    return loaded


@profiles_app.command("list")
def profiles_list(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False
) -> None:
    """Every profile a device can name, with its feed and source file."""
    for name, (profile, source) in sorted(_loaded(ctx).items()):
        if as_json:
            typer.echo(json.dumps({"name": name, "feed": profile.feed, "source": source,
                                   "description": profile.description}, ensure_ascii=False))
        else:
            typer.echo(f"{name:<28} {profile.feed:<7} {profile.description}  [{source}]")


@profiles_app.command("show")
def profiles_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Profile name.")]) -> None:
    """One profile, as loaded (defaults filled in), in JSON."""
    loaded = _loaded(ctx)
    if name not in loaded:
        typer.echo(f"no profile {name!r}; loaded: {', '.join(sorted(loaded))}", err=True)
        raise typer.Exit(1)
    profile, source = loaded[name]
    doc: dict[str, Any] = {"source": source, **profile.model_dump(mode="json", exclude_none=True)}
    typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))


@profiles_app.command("check")
def profiles_check(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files or directories (default: shipped + [domain] profiles_dir).")
    ] = None,
) -> None:
    """Validate profile files; every error names the file and the key. Exit 2 when any is wrong."""
    targets = list(paths or [BUILTIN_DIR, *filter(None, [_profiles_dir(ctx)])])
    errors: list[str] = []
    count = 0
    for target in targets:
        if target.is_dir():
            profiles, problems = check_profiles(target)
            count += len(profiles)
            errors.extend(problems)
        else:
            try:
                load_profile(target)
                count += 1
            except ProfileError as exc:
                errors.append(str(exc))
    for error in errors:
        typer.echo(error, err=True)
    if errors:
        raise typer.Exit(2)
    typer.echo(f"ok: {count} profile(s) in {', '.join(map(str, targets))}")
