"""PostgreSQL for the registry tests: `NAKHON_TEST_POSTGRES_URL` if set, else a throwaway cluster.

The throwaway cluster is made with initdb/pg_ctl from /usr/lib/postgresql/*/bin in a temp dir on a free port,
run as the `postgres` user when the tests run as root (PostgreSQL refuses to run as root).
Nothing is skipped: without the binaries the tests fail and say what to install.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.servers import free_port

ENV_URL = "NAKHON_TEST_POSTGRES_URL"


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in candidates:
        if os.path.exists(os.path.join(candidate, "initdb")) and os.path.exists(os.path.join(candidate, "pg_ctl")):
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (`apt-get install postgresql`) "
        f"or point {ENV_URL} at a PostgreSQL database whose user may CREATE DATABASE"
    )


def _as_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a libpq URL of a database the tests may create databases from."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    bin_dir = _bin_dir()
    workdir = Path(tempfile.mkdtemp(prefix="nakhon-pg-"))
    data = workdir / "data"
    port = free_port()
    if os.geteuid() == 0:
        _as_user(["true"])  # creates the postgres user if missing
        user = pwd.getpwnam("postgres")
        os.chown(workdir, user.pw_uid, user.pw_gid)
    log = workdir / "postgres.log"
    try:
        subprocess.run(
            _as_user(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        subprocess.run(
            _as_user(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"]
            ),
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"could not start a throwaway PostgreSQL: {exc.stderr.decode(errors='replace')}") from exc
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server for one test; dropped afterwards. Yields a SQLAlchemy URL."""
    name = f"nakhon_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = psycopg.conninfo.conninfo_to_dict(server_url)
    base["dbname"] = name
    user = base.get("user", "")
    password = f":{base['password']}" if base.get("password") else ""
    host = base.get("host", "127.0.0.1")
    port = base.get("port", 5432)
    try:
        yield f"postgresql+psycopg://{user}{password}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
