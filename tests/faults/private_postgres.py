"""A private, throwaway PostgreSQL server for fault tests that must restart a real one.

Why: the suite, and other runs on this machine, share the PostgreSQL server at
127.0.0.1:5432; restarting it would fail whatever else is running at that moment. A test that
needs a *real* restart (the postmaster stops, every connection dies, new connections are
refused until it is back) starts its own cluster with Debian's binaries instead: a fresh
temporary directory, trust authentication, listening only on 127.0.0.1 on a free port, its
unix socket inside that directory. :func:`private_postgres` always stops the server and
removes the directory, also when the test fails.

initdb refuses to run as root: under root the binaries run as the ``postgres`` system user
(``runuser -u postgres --``), and the directory (made under /tmp, not in pytest's tmp_path,
whose /tmp/pytest-of-root parent is mode 0700) is handed to that user.

If the test process itself is killed (SIGKILL) before its teardown, the server outlives it:
``pg_ctl -D /tmp/portal-pg-*/data stop -m immediate`` (as ``postgres``) stops it by hand.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import IN_CI

from .processes import free_port

BINARIES = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"  # the role initdb creates, and the OS user the binaries run as under root
PG_CTL_SECONDS = 60
START_ATTEMPTS = 3  # another process may take the free port between probing and binding it


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl, or None."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for candidate in BINARIES.glob("*/bin"):
        version = candidate.parent.name
        if not re.fullmatch(r"\d+(\.\d+)*", version):
            continue
        if all(os.access(candidate / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            found.append((tuple(int(n) for n in version.split(".")), candidate))
    return max(found)[1] if found else None


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message} (CI=true requires it)", pytrace=False)
    pytest.skip(f"{message}; private PostgreSQL tests skipped")


def require_bin_dir() -> Path:
    """The binaries' directory; without them (or, under root, without the ``postgres``
    user to run them as) the test fails in CI (CI=true), and is skipped elsewhere."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _unavailable(f"no PostgreSQL server binaries (initdb, pg_ctl) under {BINARIES}/*/bin")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            _unavailable(f"running as root and no {SYSTEM_USER!r} user to run initdb as")
    assert bin_dir is not None
    return bin_dir


class PostgresCommandError(RuntimeError):
    """initdb or pg_ctl failed; the message carries its output and the server log's tail."""


@dataclass
class PrivatePostgres:
    """One cluster in ``root`` (``root/data``; socket and server log in ``root``)."""

    bin_dir: Path
    root: Path
    port: int = 0
    restarts: int = 0
    _as_postgres: bool = field(default=False, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` over TCP (trust auth: no password)."""
        return f"postgresql+psycopg://{SYSTEM_USER}@127.0.0.1:{self.port}/{database}"

    # -- commands ------------------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> str:
        """Run a server binary (as ``postgres`` under root) in ``root``, with no PG*
        variables of the caller's (PGPORT, PGDATA... would redirect it)."""
        argv = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            argv = ["runuser", "-u", SYSTEM_USER, "--", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        done = subprocess.run(
            argv,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PG_CTL_SECONDS + 30,
            check=False,
        )
        if done.returncode != 0:
            raise PostgresCommandError(
                f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
                f"\n--- server log (tail):\n{self.log_tail()}"
            )
        return done.stdout

    def _pg_ctl(self, action: str, *args: str) -> str:
        return self._run(
            "pg_ctl", action, "-D", str(self.data), "-w", "-t", str(PG_CTL_SECONDS), *args
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # -- lifecycle -----------------------------------------------------------------------

    def init(self) -> None:
        """initdb with trust auth; the server settings go into postgresql.auto.conf, so that
        every start and restart reads them (the port is set by :meth:`start`)."""
        self._run(
            "initdb", "-D", str(self.data), "-U", SYSTEM_USER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip

    def _configure(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "100",
            "logging_collector": "off",
        }
        lines = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
        (self.data / "postgresql.auto.conf").write_text(lines)  # stays owned by postgres

    def start(self) -> None:
        """Start the server on a free port (another, if that one was taken meanwhile)."""
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            self._configure()
            try:
                self._pg_ctl("start", "-l", str(self.log))
                return
            except PostgresCommandError:
                if attempt == START_ATTEMPTS - 1 or "Address already in use" not in self.log_tail():
                    raise

    def restart(self) -> float:
        """``pg_ctl restart -m fast``: the postmaster terminates every session (SQLSTATE
        57P01), checkpoints and exits; until the new one is ready connections are refused
        (or answered "the database system is starting up"). Returns the seconds it took."""
        before = self.postmaster_pid()
        started = time.monotonic()
        self._pg_ctl("restart", "-m", "fast", "-l", str(self.log))
        elapsed = time.monotonic() - started
        after = self.postmaster_pid()
        if before is None or after is None or after == before:
            raise PostgresCommandError(f"the postmaster did not restart ({before} -> {after})")
        self.restarts += 1
        return elapsed

    def stop(self, mode: str = "fast") -> None:
        if self.postmaster_pid() is not None:
            self._pg_ctl("stop", "-m", mode)

    def postmaster_pid(self) -> int | None:
        """The running postmaster's PID (first line of postmaster.pid), or None."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first) if first.strip().isdigit() else None

    # -- databases -----------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; returns its SQLAlchemy URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)


@contextlib.contextmanager
def private_postgres(bin_dir: Path | None = None) -> Iterator[PrivatePostgres]:
    """A running private server; stopped (fast, else immediate) and its directory removed on
    exit, whatever happened. Skips or fails (CI=true) without the binaries."""
    bin_dir = bin_dir or require_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="portal-pg-", dir="/tmp"))
    as_postgres = os.geteuid() == 0
    server = PrivatePostgres(bin_dir, root, _as_postgres=as_postgres)
    try:
        if as_postgres:
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(root, user.pw_uid, user.pw_gid)
        server.init()
        server.start()
        yield server
    finally:
        try:
            try:
                server.stop("fast")
            except (PostgresCommandError, subprocess.TimeoutExpired):
                server.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)
