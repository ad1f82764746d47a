"""`make run` / `make serve`: the Procfile, the compose example, the process runner, and the whole
production stack (gunicorn, a worker, beat) against PostgreSQL, Redis and an S3 server.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from donation_portal.cli.dev_setup import prepare_instance
from donation_portal.cli.run_dev import dev_processes, read_procfile, supervise
from tests.conftest import (
    create_postgres_database,
    drop_postgres_database,
    require_redis,
)

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("PORTAL_TEST_SERVE_REDIS_URL", "redis://127.0.0.1:6379/14")
STARTUP_SECONDS = 40


def _defaults(command: str) -> list[str]:
    """A Procfile command's words with ``${VAR:-default}`` replaced by the default."""
    return shlex.split(re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", command))


def test_procfile_runs_migrations_web_workers_and_beat() -> None:
    processes = read_procfile(ROOT / "Procfile")
    assert list(processes) == ["release", "web", "worker", "beat"]
    assert _defaults(processes["release"]) == ["flask", "--app", "donation_portal", "db", "upgrade"]
    web = _defaults(processes["web"])
    assert web[0] == "gunicorn" and web[-1] == "donation_portal:create_app()"
    assert web[web.index("--workers") + 1] == "2"
    assert "${WEB_CONCURRENCY:-2}" in processes["web"]
    worker = _defaults(processes["worker"])
    assert worker[:4] == ["celery", "-A", "donation_portal.worker.main", "worker"]
    assert worker[worker.index("-Q") + 1] == "ingest,maintenance"
    assert "-B" not in worker  # beat runs once, on its own
    beat = _defaults(processes["beat"])
    assert beat[:4] == ["celery", "-A", "donation_portal.worker.main", "beat"]


def test_make_run_starts_the_web_server_and_a_worker_with_beat() -> None:
    processes = dev_processes("127.0.0.1", 5000)
    assert set(processes) == {"web", "worker"}
    assert processes["web"][1:5] == ["-m", "flask", "--app", "donation_portal"]
    worker = processes["worker"]
    assert worker[1:6] == ["-m", "celery", "-A", "donation_portal.worker.main", "worker"]
    assert "-B" in worker
    assert worker[worker.index("-Q") + 1] == "ingest,maintenance"


def test_compose_example_is_the_same_stack() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"postgres", "redis", "minio", "web", "worker", "beat"} <= set(services)
    procfile = read_procfile(ROOT / "Procfile")
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert '"--procfile", "Procfile", "--only"' in dockerfile
    for name in ("release", "web", "worker", "beat"):
        service = services[name]
        assert service["command"] == [name] and name in procfile
        env = service["environment"]
        assert env["PORTAL_ENV"] == "production"
        assert env["PORTAL_BROKER_URL"].startswith("redis://redis:")
        assert env["PORTAL_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["PORTAL_STORAGE_BACKEND"] == "s3"
        assert env["PORTAL_S3_ENDPOINT_URL"] == "http://minio:9000"
        # no state on a node but its configuration and the key files (read-only)
        assert service["volumes"] == ["./keys:/var/lib/portal/keys:ro"]
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["web"]["environment"]["HOST"] == "0.0.0.0"


# --- the process runner ----------------------------------------------------------------------


def _sleeper(tag: Path, code: int | None = None) -> str:
    """A command that writes its PID to ``tag`` and sleeps, or exits with ``code`` at once."""
    then = f"exit {code}" if code is not None else "exec sleep 60"
    return f"sh -c {shlex.quote(f'echo $$ > {shlex.quote(str(tag))}; {then}')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_when_one_process_dies_the_others_are_stopped(tmp_path: Path) -> None:
    started = time.monotonic()
    code = supervise(
        {"long": _sleeper(tmp_path / "long"), "short": _sleeper(tmp_path / "short", code=3)},
        grace_seconds=5,
    )
    assert code == 3
    assert time.monotonic() - started < 15
    assert not _alive(int((tmp_path / "long").read_text()))


def _run(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    lines: list[str] = []
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    return process, lines


STARTED = re.compile(r"^\S+\s+\| started \(pid (\d+)\)$")


def _kill(process: subprocess.Popen[str], lines: list[str]) -> None:
    """Stop the runner (it stops its children); kill what is left, ours by PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
        return  # the runner waits for its children, and kills them after its grace
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    for line in list(lines):
        match = STARTED.match(line)
        if match:  # each child leads a process group of its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(match.group(1)), signal.SIGKILL)


def _wait_for(predicate, seconds: float, what: str, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            tail = "\n".join(lines[-80:])
            pytest.fail(f"{what} within {seconds} s; output:\n{tail}", pytrace=False)
        time.sleep(0.2)


def test_sigterm_stops_every_process_and_the_runner(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"release: {_sleeper(tmp_path / 'release', code=0)}\n"
        f"one: {_sleeper(tmp_path / 'one')}\n"
        f"two: {_sleeper(tmp_path / 'two')}\n",
        encoding="utf-8",
    )
    argv = [sys.executable, "-m", "donation_portal.cli.run_dev", "--procfile", str(procfile)]
    runner, lines = _run(argv, dict(os.environ))
    try:
        tags = [tmp_path / name for name in ("release", "one", "two")]
        _wait_for(lambda: all(tag.exists() for tag in tags), 20, "processes not started", lines)
        time.sleep(0.3)  # the PID is written just before the sleep starts
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=20) == 0
        pids = [int((tmp_path / name).read_text()) for name in ("one", "two")]
        assert not any(_alive(pid) for pid in pids)
    finally:
        _kill(runner, lines)


# --- the production stack --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])



@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[str]:
    """moto in server mode on a free port, with the bucket made."""
    import boto3

    port = _free_port()
    log = (tmp_path / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",  # noqa: S106 (moto's)
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                client.create_bucket(Bucket="portal-serve")
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        log.close()


def _healthz(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our loopback URL)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_make_serve_runs_the_production_stack(tmp_path: Path, s3_server: str) -> None:
    require_redis(REDIS_URL, "the `make serve` check")
    database_url, admin = create_postgres_database()
    try:
        instance = tmp_path / "instance"
        prepare_instance(instance)  # the key files an operator provisions
        (instance / "secret_key").unlink()  # production takes it from the environment
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "AWS_"))}
        env.update(
            PORTAL_ENV="production",
            PORTAL_INSTANCE_PATH=str(instance),
            PORTAL_SECRET_KEY="s" * 48,
            PORTAL_DATABASE_URL=database_url,
            PORTAL_CONTROLLER_NAME="Example Hospital",
            PORTAL_CONTROLLER_ADDRESS="Beispielstraße 1, 12345 Musterstadt",
            PORTAL_CONTROLLER_CONTACT="datenschutz@example.org",
            PORTAL_BROKER_URL=REDIS_URL,
            PORTAL_RATELIMIT_STORAGE_URI=REDIS_URL,
            PORTAL_STORAGE_BACKEND="s3",
            PORTAL_S3_BUCKET="portal-serve",
            PORTAL_S3_ENDPOINT_URL=s3_server,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",  # noqa: S106 (moto's)
            HOST="127.0.0.1",
            PORT=str(port),
            WEB_CONCURRENCY="1",
            WORKER_CONCURRENCY="1",
            WORKER_NAME=f"serve-test-{port}",
        )
        argv = [sys.executable, "-m", "donation_portal.cli.run_dev", "--procfile", "Procfile"]
        runner, lines = _run(argv, env)
        try:
            url = f"http://127.0.0.1:{port}/healthz"
            _wait_for(lambda: _healthz(url) == 200, STARTUP_SECONDS, "no healthy /healthz", lines)
            _wait_for(
                lambda: any(f"serve-test-{port}@" in line and "ready" in line for line in lines)
                and any("beat: Starting" in line for line in lines),
                STARTUP_SECONDS,
                "the worker or beat did not start",
                lines,
            )
            assert any("release | " in line for line in lines)
            assert runner.poll() is None
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(timeout=40) == 0
        finally:
            _kill(runner, lines)
    finally:
        drop_postgres_database(admin, database_url)
