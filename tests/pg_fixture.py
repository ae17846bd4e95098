"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a data directory in /tmp, a free port
on 127.0.0.1, trust auth, stopped and removed at the end. Import the fixtures into a test module to use them:
`from pg_fixture import postgres_server, postgres_url  # noqa: F401`. `make test` installs the server."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "router"
# Debian keeps the server's programs off PATH, one directory per major version
BIN_GLOB = "/usr/lib/postgresql/*/bin"


def server_bin() -> Path | None:
    """The newest installed server's bin directory, or one on PATH; None when there is no server."""
    found = sorted((Path(d) for d in glob.glob(BIN_GLOB) if Path(d, "pg_ctl").exists()),
                   key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and Path(on_path).with_name("initdb").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@dataclass
class PostgresServer:
    port: int
    host: str = "127.0.0.1"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@{self.host}:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=USER, dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)


@pytest.fixture(scope="session")
def postgres_server():
    bin_dir = server_bin()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL server (looked in {BIN_GLOB} and PATH): apt-get install postgresql, or make test")
    # postgres refuses to run as root: run it as Debian's postgres user, in a directory that user owns
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user and not _user_exists("postgres"):
        pytest.skip("running as root, and there is no `postgres` user to run the server as (Debian's package makes it)")
    root = Path(tempfile.mkdtemp(prefix="router-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if as_user:
        for owned in (root, sockets):
            shutil.chown(owned, "postgres", "postgres")
    port = _free_port()

    def run(*args: str) -> None:
        done = subprocess.run(as_user + [str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr or done.stdout}"
                               + (f"\nserver log:\n{log.read_text()}" if log.exists() else ""))

    try:
        run("initdb", "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield PostgresServer(port)
    finally:
        try:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_server.admin(f'CREATE DATABASE "{name}"')
    yield postgres_server.url(name)
    postgres_server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
