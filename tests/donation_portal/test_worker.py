"""The Celery workers: their configuration, the ingest task's retries, the wiring of the queues,
and a real worker process running a task end to end against a committed database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from donation_portal import create_app
from donation_portal.adapters import migrate, services
from donation_portal.adapters.db import make_engine
from donation_portal.adapters.jobs import CeleryQueue, InlineQueue
from donation_portal.adapters.keyfiles import read_secret_file
from donation_portal.adapters.models import WorkerHeartbeat
from donation_portal.adapters.request_session import get_session
from donation_portal.cli.dev_setup import prepare_instance
from donation_portal.worker import make_celery
from donation_portal.worker.tasks import BACKOFF_BASE, backoff
from tests.conftest import (
    create_postgres_database,
    drop_postgres_database,
    require_redis,
)

REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_SECONDS = 30
TASK_DONE_SECONDS = 15


def _app(tmp_path: Path, **config: Any) -> Flask:
    settings = {
        "ENV": "test",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        **config,
    }
    return create_app(settings)


# --- configuration ---------------------------------------------------------------------------


def test_celery_app_acknowledges_late_and_one_job_at_a_time(tmp_path: Path) -> None:
    app = _app(tmp_path, BROKER_URL="redis://127.0.0.1:6379/1", JOB_STALLED_AFTER=1234)
    conf = make_celery(app).conf
    assert conf.broker_url == "redis://127.0.0.1:6379/1"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_ignore_result is True
    assert not conf.result_backend
    assert conf.broker_transport_options == {"visibility_timeout": 1234}


def test_embedded_broker_gets_no_redis_options(tmp_path: Path) -> None:
    app = _app(tmp_path)
    conf = make_celery(app).conf
    assert conf.broker_url == f"sqla+sqlite:///{tmp_path / 'instance' / 'broker.sqlite3'}"
    # kombu's SQLAlchemy transport hands these to create_engine: no visibility_timeout there
    assert "visibility_timeout" not in conf.broker_transport_options


def test_tasks_are_routed_to_their_queues(tmp_path: Path) -> None:
    celery = make_celery(_app(tmp_path))
    assert {q.name for q in celery.conf.task_queues} == {"ingest", "maintenance"}
    router = celery.amqp.router
    assert router.route({}, "portal.ingest_upload")["queue"].name == "ingest"
    for name in (
        "portal.expire_uploads",
        "portal.requeue_stalled",
        "portal.reconcile",
        "portal.sweep",
        "portal.heartbeat",
    ):
        assert name in celery.tasks
        assert router.route({}, name)["queue"].name == "maintenance"


def test_beat_schedule(tmp_path: Path) -> None:
    schedule = make_celery(_app(tmp_path)).conf.beat_schedule
    by_task = {entry["task"]: entry for entry in schedule.values()}
    assert set(by_task) == {
        "portal.heartbeat",
        "portal.requeue_stalled",
        "portal.reconcile",
        "portal.expire_uploads",
        "portal.sweep",
    }
    assert by_task["portal.heartbeat"]["schedule"] == timedelta(seconds=30)
    assert by_task["portal.reconcile"]["schedule"] <= timedelta(minutes=5)
    assert by_task["portal.sweep"]["schedule"] == timedelta(hours=1)
    assert by_task["portal.requeue_stalled"]["schedule"] <= timedelta(minutes=5)
    for entry in schedule.values():
        assert entry["options"]["queue"] == "maintenance"
        # a backlog of periodic jobs (workers down for a while) is dropped, not run N times
        assert entry["options"]["expires"] == entry["schedule"].total_seconds()


def test_producer_and_workers_agree_on_queues(tmp_path: Path) -> None:
    app = _app(tmp_path, BROKER_URL="redis://127.0.0.1:6379/1")
    producer = services.celery_producer(app.config)
    worker = make_celery(app)
    assert producer.conf.task_queues == worker.conf.task_queues
    for name, queue in (("portal.ingest_upload", "ingest"), ("portal.sweep", "maintenance")):
        assert producer.amqp.router.route({}, name)["queue"].name == queue
    assert producer.conf.broker_transport_options == worker.conf.broker_transport_options
    assert not producer.tasks.keys() & {"portal.ingest_upload", "portal.heartbeat"}


# --- the ingest task -------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for retries in range(8):
        delay = min(60.0, BACKOFF_BASE * 2**retries)
        for _ in range(20):
            assert delay / 2 <= backoff(retries, cap=60.0) <= delay
    assert len({backoff(3) for _ in range(10)}) > 1


@pytest.fixture
def fake_ingest(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from donation_portal.workflows import ingest

    calls: list[dict[str, Any]] = []

    def run_ingest_job(  # type: ignore[no-untyped-def]
        session_factory, store_for, deid_key, upload_id, *, final_attempt, max_file_bytes
    ):
        calls.append(
            {
                "session_factory": session_factory,
                "store_for": store_for,
                "deid_key": deid_key,
                "upload_id": upload_id,
                "final_attempt": final_attempt,
                "max_file_bytes": max_file_bytes,
            }
        )
        if upload_id.startswith("flaky") and not final_attempt:
            raise ingest.RetryLater("storage unreachable")
        if upload_id.startswith("down"):
            raise ingest.RetryLater("storage unreachable")
        return "stored"

    monkeypatch.setattr(ingest, "run_ingest_job", run_ingest_job)
    return calls


def test_ingest_retries_transient_errors_then_makes_a_final_attempt(
    tmp_path: Path, fake_ingest: list[dict[str, Any]]
) -> None:
    app = _app(tmp_path, JOB_MAX_ATTEMPTS=4)
    prepare_instance(tmp_path / "instance")
    task = make_celery(app).tasks["portal.ingest_upload"]
    result = task.apply(args=["flaky-1"])
    assert result.get() == "stored"
    assert [call["final_attempt"] for call in fake_ingest] == [False, False, False, True]
    call = fake_ingest[-1]
    assert call["session_factory"] is app.extensions["portal_sessionmaker"]
    assert call["store_for"] is services.object_store
    assert call["deid_key"] == read_secret_file(tmp_path / "instance" / "keys" / "deid.key")
    assert call["max_file_bytes"] == app.config["MAX_FILE_BYTES"]


def test_ingest_gives_up_loudly_after_the_last_attempt(
    tmp_path: Path, fake_ingest: list[dict[str, Any]]
) -> None:
    from donation_portal.workflows import ingest

    app = _app(tmp_path, JOB_MAX_ATTEMPTS=2)
    prepare_instance(tmp_path / "instance")
    task = make_celery(app).tasks["portal.ingest_upload"]
    result = task.apply(args=["down-1"])
    with pytest.raises(ingest.RetryLater):
        result.get()
    assert [call["final_attempt"] for call in fake_ingest] == [False, True]


# --- wiring: which queue, which backend ------------------------------------------------------


def test_inline_queue_runs_jobs_when_the_request_ends(
    tmp_path: Path, fake_ingest: list[dict[str, Any]]
) -> None:
    app = _app(tmp_path)
    prepare_instance(tmp_path / "instance")
    assert app.config["JOBS_INLINE"] is True
    with app.test_request_context():
        queue = services.job_queue()
        assert isinstance(queue, InlineQueue)
        assert services.job_queue() is queue
        queue.send_ingest(["u1", "u2"])
        assert fake_ingest == []
    assert [call["upload_id"] for call in fake_ingest] == ["u1", "u2"]
    assert all(call["final_attempt"] for call in fake_ingest)
    assert fake_ingest[0]["session_factory"] is app.extensions["portal_sessionmaker"]


def test_inline_jobs_also_run_at_the_end_of_a_command(
    tmp_path: Path, fake_ingest: list[dict[str, Any]]
) -> None:
    app = _app(tmp_path)
    prepare_instance(tmp_path / "instance")
    with app.app_context():
        services.job_queue().send_ingest(["u3"])
    assert [call["upload_id"] for call in fake_ingest] == ["u3"]


def test_celery_queue_publishes_by_name_without_task_code(tmp_path: Path) -> None:
    app = _app(tmp_path, JOBS_INLINE=False)
    with app.app_context():
        queue = services.job_queue()
        assert isinstance(queue, CeleryQueue)
        assert services.job_queue() is queue


def test_storage_backend_is_local_or_s3(tmp_path: Path) -> None:
    from storage import LocalBackend, S3Backend

    with _app(tmp_path).app_context():
        assert isinstance(services.backend(), LocalBackend)
    app = _app(
        tmp_path,
        STORAGE_BACKEND="s3",
        S3_BUCKET="portal-objects",
        S3_PREFIX="objects/",
        S3_ENDPOINT_URL="http://127.0.0.1:9",
        S3_REGION="eu-central-1",
    )
    with app.app_context():
        backend = services.backend()
    assert isinstance(backend, S3Backend)
    assert (backend.bucket, backend.prefix) == ("portal-objects", "objects/")
    assert backend.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert backend.client.meta.region_name == "eu-central-1"


# --- a real worker process -------------------------------------------------------------------



class Worker:
    """A `celery worker` subprocess; its output is collected so a failure can show it."""

    def __init__(self, env: dict[str, str], queues: str, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self._ready = threading.Event()
        argv = [
            sys.executable, "-m", "celery", "-A", "donation_portal.worker.main", "worker",
            "-Q", queues, "--concurrency", "1", "--hostname", f"{name}@%h",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if " ready." in line:
                self._ready.set()

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while not self._ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker did not become ready:\n{self.output()}")

    def stop(self) -> None:
        """SIGKILL to the worker's process group: its queue and database are this test's."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class Stack:
    """A worker process over a migrated, committed database (no savepoint-joined session)."""

    kind: str
    url: str
    instance: Path
    broker_url: str | None
    heartbeat_queue: str
    worker: Worker

    def app(self, **config: Any) -> Flask:
        settings = {"ENV": "test", "INSTANCE_PATH": str(self.instance), "DATABASE_URL": self.url}
        if self.broker_url:
            settings["BROKER_URL"] = self.broker_url
        return create_app({**settings, **config})


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``stacks(kind)``: a worker over a database, started once per module and kind.

    ``redis+postgresql``: the worker consumes a queue of its own, so neither a concurrent
    run nor a dev worker on the same Redis takes its messages. ``sqla+sqlite``: the embedded
    broker is a file of this test's, so the worker consumes the real queues.
    """
    started: dict[str, Stack] = {}
    cleanups: list[Any] = []

    def start(kind: str) -> Stack:
        broker_kind, database_kind = kind.split("+")
        tmp = tmp_path_factory.mktemp(database_kind)
        instance = tmp / "instance"
        prepare_instance(instance)
        if database_kind == "postgresql":
            url, admin = create_postgres_database()
            cleanups.append(lambda: drop_postgres_database(admin, url))
        else:
            url = f"sqlite:///{tmp / 'portal.sqlite3'}"
        migrate.upgrade(url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
        env.update(
            PORTAL_ENV="test",
            PORTAL_INSTANCE_PATH=str(instance),
            PORTAL_DATABASE_URL=url,
            PYTHONUNBUFFERED="1",
        )
        token = secrets.token_hex(4)
        if broker_kind == "redis":
            env["PORTAL_BROKER_URL"] = REDIS_URL
            queues = heartbeat_queue = f"test-{token}"
            cleanups.append(lambda: _forget_redis_queue(heartbeat_queue))
        else:
            queues, heartbeat_queue = "ingest,maintenance", "maintenance"
        worker = Worker(env, queues, f"test-{token}")
        cleanups.append(worker.stop)
        return Stack(kind, url, instance, env.get("PORTAL_BROKER_URL"), heartbeat_queue, worker)

    def get(kind: str) -> Stack:
        if kind.startswith("redis"):
            require_redis(REDIS_URL, "the real-broker worker test (PORTAL_TEST_REDIS_URL)")
        if kind not in started:
            started[kind] = start(kind)
            # the other worker starts meanwhile: start-up is most of these tests' time
            if "sqla+sqlite" not in started:
                started["sqla+sqlite"] = start("sqla+sqlite")
        started[kind].worker.wait_ready()
        return started[kind]

    try:
        yield get
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def _forget_redis_queue(queue: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    finally:
        client.close()


def _heartbeats(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(select(WorkerHeartbeat.worker, WorkerHeartbeat.at)).all())
    finally:
        engine.dispose()


def donate_one(app: Flask, email: str, content: bytes) -> Any:
    """A new donor of ``app`` signs the consent and uploads ``content``; the upload's reply."""
    from consent import default_template_spec, publish_template

    from .conftest import Browser

    with app.app_context():
        session = get_session()
        publish_template(session, default_template_spec())
        session.commit()
    browser = Browser(app.test_client())
    assert browser.register(email).status_code == 303
    assert browser.sign_consent().status_code == 200
    return browser.upload([content])


def _poll(check, worker: Worker, what: str) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + TASK_DONE_SECONDS
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} within {TASK_DONE_SECONDS} s:\n{worker.output()}")


NOLOAD = "ignore:The ``noload`` loader strategy:DeprecationWarning"  # kombu's SQLAlchemy transport


@pytest.mark.filterwarnings(NOLOAD)
@pytest.mark.parametrize("kind", ["redis+postgresql", "sqla+sqlite"])
def test_a_worker_process_records_its_heartbeat(stacks: Any, kind: str) -> None:
    """On start, then through the heartbeat task, in a real committed database."""
    stack: Stack = stacks(kind)
    name = f"{stack.worker.name}@{os.uname().nodename}"
    first = _poll(lambda: _heartbeats(stack.url), stack.worker, "no heartbeat at start")
    assert list(first) == [name]

    app = stack.app()
    app.extensions["portal_engine"].dispose()
    producer = services.celery_producer(app.config)
    try:
        producer.send_task("portal.heartbeat", queue=stack.heartbeat_queue)
    finally:
        producer.close()
    later = _poll(
        lambda: (beats := _heartbeats(stack.url)) and beats[name] > first[name] and beats,
        stack.worker,
        "the heartbeat task recorded nothing",
    )
    assert list(later) == [name]


@pytest.mark.filterwarnings(NOLOAD)
def test_an_upload_is_ingested_by_a_worker_after_the_commit(stacks: Any) -> None:
    """The web process publishes after its commit; a worker process de-identifies and stores."""
    from donation_portal.adapters.models import DonatedFile, Upload

    from .phi import real_file

    stack: Stack = stacks("sqla+sqlite")
    app = stack.app(JOBS_INLINE=False)
    try:
        uploaded = donate_one(app, "worker-e2e@example.org", real_file("CT_small.dcm").content)
        assert uploaded.status_code == 303

        engine = make_engine(stack.url)

        def done() -> list[tuple[str, str | None]]:
            with engine.connect() as conn:
                states = conn.execute(select(Upload.state)).scalars().all()
                files = conn.execute(select(DonatedFile.status, DonatedFile.modality)).all()
            return [tuple(row) for row in files] if states == ["done"] and files else []

        try:
            files = _poll(done, stack.worker, "the upload was not ingested")
        finally:
            engine.dispose()
        assert files == [("accepted", "CT")]
        assert "portal.ingest_upload" in stack.worker.output()
    finally:
        app.extensions["portal_engine"].dispose()
