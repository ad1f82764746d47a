"""The portal's real processes for the fault tests: gunicorn (as the Procfile runs it) and a
Celery worker. Each runs in a process group of its own, logs to a file, and is killed (the
whole group, SIGKILL) by :meth:`ProcessGroup.kill`, which the fixtures call in teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .http import Client

ROOT = Path(__file__).resolve().parents[2]
READY_SECONDS = 30.0
# Runs the command with PR_SET_PDEATHSIG = SIGKILL (kept across exec): if the test process
# itself is killed, before any teardown can run, the group leader dies with it; gunicorn's
# and Celery's own children notice their parent is gone and exit.
_DIE_WITH_PARENT = (
    "import ctypes, os, sys; ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0); "
    "os.getppid() == 1 and sys.exit(1); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ProcessGroup:
    """``python argv[1:]`` in a new session (its own process group), output appended to
    ``log``; it dies with the test process."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessGroup:
        with open(self.log, "ab") as out:
            out.write(f"--- starting {self.name}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-c", _DIE_WITH_PARENT, *self.argv[1:]],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self, lines: int = 80) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def children(self) -> list[int]:
        """The group leader's direct children (a worker's pool processes, gunicorn's workers)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return []
        return [int(pid) for pid in text.split()]

    def kill(self) -> None:
        """SIGKILL the whole group (leader and children) and reap the leader."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


class WebServer(ProcessGroup):
    """``gunicorn 'donation_portal:create_app()'`` on a loopback port (the Procfile's web)."""

    def __init__(
        self, env: dict[str, str], log: Path, *, port: int, workers: int = 1, threads: int = 4
    ) -> None:
        argv = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(workers), "--threads", str(threads),
            "--bind", f"127.0.0.1:{port}", "--timeout", "60", "--graceful-timeout", "2",
            "donation_portal:create_app()",
        ]  # fmt: skip
        super().__init__("gunicorn", argv, env, log)
        self.port = port

    def wait_ready(self, seconds: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"gunicorn exited early:\n{self.output()}")
            try:
                reply = Client(self.port, timeout=2).get("/healthz")
            except OSError:
                time.sleep(0.1)
                continue
            if reply.status in (200, 503):
                return
            time.sleep(0.1)
        pytest.fail(f"gunicorn did not answer within {seconds:.0f} s:\n{self.output()}")


class CeleryWorker(ProcessGroup):
    """``celery -A donation_portal.worker.main worker`` on one queue, one pool process."""

    def __init__(self, env: dict[str, str], log: Path, *, queue: str, name: str) -> None:
        argv = [
            sys.executable, "-m", "celery", "-A", "donation_portal.worker.main", "worker",
            "-Q", queue, "--concurrency", "1", "--pool", "prefork",
            "--hostname", f"{name}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        super().__init__(name, argv, env, log)
        self._seen = 0

    def wait_ready(self, seconds: float = READY_SECONDS) -> None:
        self.wait_for(" ready.", seconds)

    def wait_for(self, text: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in self.output(400):
                return
            if not self.alive():
                pytest.fail(f"the worker exited:\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"the worker did not log {text!r} within {seconds:.0f} s:\n{self.output()}")


def portal_env(**settings: str) -> dict[str, str]:
    """This environment without any PORTAL_* variable of the caller's, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({f"PORTAL_{key}": str(value) for key, value in settings.items()})
    return env
