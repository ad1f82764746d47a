"""Start the portal's processes together and stop them together (`make run`, `make serve`).

    python -m donation_portal.cli.run_dev                     # make run: dev setup, web + worker
    python -m donation_portal.cli.run_dev --procfile Procfile  # make serve: the Procfile's lines
    python -m donation_portal.cli.run_dev --procfile Procfile --only web   # one, in a container

Development (the default) runs the first-run setup, then the Flask development server
(threaded) and one Celery worker with the beat scheduler embedded (``-B``), on SQLite and the
embedded broker: nothing else to install or start. With ``--procfile`` it runs a Procfile
instead: a ``release`` line first (migrations), to its end, then every other line at once.

Each process gets its own process group; Ctrl-C or SIGTERM is passed to all of them, and when
one of them exits the others are stopped too (SIGTERM, then SIGKILL after a grace period), so
a crashed worker never leaves a web server running that looks healthy but processes nothing.
Output lines are prefixed with the process name.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_GRACE_SECONDS = 20.0  # a worker's warm shutdown lets its running job finish
_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def read_procfile(path: str | os.PathLike[str]) -> dict[str, str]:
    """``name: command`` lines (blank lines and ``#`` comments skipped), in file order."""
    processes: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _PROCFILE_LINE.match(line.strip())
        if match is None:
            raise ValueError(f"{path}:{number}: expected 'name: command'")
        processes[match.group(1)] = match.group(2)
    return processes


def dev_processes(host: str, port: int) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "web": [python, "-m", "flask", "--app", "donation_portal", "run",
                "--host", host, "--port", str(port), "--with-threads"],
        "worker": [python, "-m", "celery", "-A", "donation_portal.worker.main", "worker",
                   "-B", "-Q", "ingest,maintenance", "--without-mingle", "--without-gossip",
                   "--concurrency", "2",
                   "--hostname", "dev-worker@%h", "--loglevel", "INFO"],
    }  # fmt: skip


class Supervisor:
    """Runs named commands; :meth:`wait` returns when one exits or a stop is asked for."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._width = 6

    def start(self, name: str, command: str | Sequence[str]) -> subprocess.Popen[bytes]:
        # a Procfile line is a shell command (variables like ${WEB_CONCURRENCY:-2}); `exec`
        # makes the command itself the group leader that receives our signals
        argv = ["/bin/sh", "-c", f"exec {command}"] if isinstance(command, str) else list(command)
        process = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our signal handler decides what the children get
        )
        self._width = max(self._width, len(name))
        self.processes[name] = process
        threading.Thread(target=self._relay, args=(name, process), daemon=True).start()
        self.say(name, f"started (pid {process.pid})")
        return process

    def say(self, name: str, line: str) -> None:
        sys.stdout.write(f"{name:<{self._width}} | {line.rstrip()}\n")
        sys.stdout.flush()

    def _relay(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self.say(name, raw.decode("utf-8", "replace"))

    def request_stop(self, signum: int = signal.SIGTERM, _frame: object = None) -> None:
        self._stop.set()

    def wait(self, poll_seconds: float = 0.2) -> tuple[str | None, int]:
        """Block until a process exits (its name and code) or a stop (None, 0)."""
        while not self._stop.is_set():
            for name, process in self.processes.items():
                code = process.poll()
                if code is not None:
                    return name, code
            self._stop.wait(poll_seconds)
        return None, 0

    def stop_all(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM to every process group still running; SIGKILL to what outlives the grace."""
        for name, process in self.processes.items():
            if process.poll() is None:
                self.say(name, "stopping")
                # the leader only: a Celery worker or gunicorn master stops its own children
                # (a SIGTERM to a pool process would count as a lost worker)
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for name, process in self.processes.items():
            if process.poll() is None:
                self.say(name, f"still running after {grace_seconds:.0f} s: killed")
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
            # whatever the command left behind in its group goes too
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def supervise(
    commands: Mapping[str, str | Sequence[str]],
    env: Mapping[str, str] | None = None,
    grace_seconds: float = STOP_GRACE_SECONDS,
) -> int:
    """Run ``commands`` until one exits or we get SIGINT/SIGTERM; stop the rest; exit code."""
    supervisor = Supervisor(env)
    previous = {
        signum: signal.signal(signum, supervisor.request_stop)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        for name, command in commands.items():
            supervisor.start(name, command)
        stopped, code = supervisor.wait()
        if stopped is not None:
            supervisor.say(stopped, f"exited with code {code}; stopping the others")
    finally:
        supervisor.stop_all(grace_seconds)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stopped is None:
        return 0
    return code or 1  # one process ending on its own is a failure of the whole


def run_release(command: str, env: Mapping[str, str]) -> int:
    print(f"release | {command}", flush=True)
    return subprocess.run(["/bin/sh", "-c", command], env=dict(env), check=False).returncode


def _env_with_venv() -> dict[str, str]:
    # Procfile commands name `gunicorn`, `celery`, `flask`: take them from this interpreter's
    # environment (the venv), whoever started us
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m donation_portal.cli.run_dev")
    parser.add_argument("--procfile", help="run this Procfile's processes (make serve)")
    parser.add_argument(
        "--only", metavar="NAME", help="with --procfile: become that one process (containers)"
    )
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    args = parser.parse_args(argv)
    env = _env_with_venv()
    if args.only and not args.procfile:
        parser.error("--only needs --procfile")
    if args.procfile:
        commands: dict[str, str | Sequence[str]] = dict(read_procfile(args.procfile))
        if args.only:
            if args.only not in commands:
                parser.error(f"{args.procfile} has no process {args.only!r}")
            # one container, one process: the Procfile line replaces us (signals go straight
            # to it), so a container platform runs exactly what `make serve` runs
            os.execve("/bin/sh", ["/bin/sh", "-c", f"exec {commands[args.only]}"], env)  # noqa: S606
        release = commands.pop("release", None)
        if isinstance(release, str):
            code = run_release(release, env)
            if code:
                print(f"release failed with code {code}", file=sys.stderr)
                return code
        return supervise(commands, env)

    from flask import Flask

    from donation_portal.cli import dev_setup

    default_instance = Flask("donation_portal").instance_path
    instance = Path(os.environ.get("PORTAL_INSTANCE_PATH") or default_instance)
    env["PORTAL_INSTANCE_PATH"] = str(instance)
    os.environ["PORTAL_INSTANCE_PATH"] = str(instance)
    code = dev_setup.main()
    if code:
        return code
    print(f"Serving on http://{args.host}:{args.port} with one worker; Ctrl-C stops both.")
    return supervise(dev_processes(args.host, args.port), env)


if __name__ == "__main__":
    raise SystemExit(main())
