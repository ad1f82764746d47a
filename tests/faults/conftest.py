"""Fixtures of the fault tests: committed databases, an instance folder, real processes.

Unlike the rest of the suite, nothing here runs inside a rolled-back transaction: the web
server and the workers are separate processes that must see committed rows. Each test gets
a fresh database (a migrated SQLite file, or a new PostgreSQL database that is dropped
afterwards), its own instance folder with keys, and a published consent template. Every
process a test starts is killed (its whole process group, SIGKILL) in teardown, and dies
with the test process if that is killed before teardown (PR_SET_PDEATHSIG). Only the tmpfs
of the storage-full test outlives a test process killed that way (``umount`` it by hand).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

import consent
from donation_portal import create_app
from donation_portal.adapters import migrate
from donation_portal.adapters.db import make_engine
from donation_portal.adapters.keyfiles import read_secret_file
from donation_portal.adapters.keystore import DatabaseKeyStore
from donation_portal.adapters.models import (
    DonatedFile,
    ScopeKey,
    StoredObject,
    Upload,
    UploadPart,
    stored_info,
)
from donation_portal.cli.dev_setup import prepare_instance
from donation_portal.workflows import accounts, ingest
from storage import KeyRing, LocalBackend, ObjectStore
from tests.conftest import IN_CI, create_postgres_database, drop_postgres_database

from .http import PASSWORD, Client, WsgiClient
from .processes import CeleryWorker, ProcessGroup, WebServer, free_port, portal_env

# Jobs the web servers and in-process apps queue go to the embedded broker of the instance
# folder (``sqla+sqlite``), which no worker consumes: the parts stay in quarantine until the
# test runs the job itself. The worker test uses Redis database 15 (as test_worker.py does;
# bench scripts flush free ones among 2-14) with a queue of its own, so concurrent runs
# never take each other's messages.
REDIS_BASE = os.environ.get("PORTAL_TEST_FAULTS_REDIS_URL", "redis://127.0.0.1:6379")
WORKER_BROKER_DB = 15


@dataclass
class Portal:
    """A committed database, an instance folder, and the processes started on them."""

    kind: str
    url: str
    instance: Path
    tmp: Path
    engine: Engine
    storage_dir: Path
    processes: list[ProcessGroup] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    apps: list[Flask] = field(default_factory=list)

    @property
    def sessions(self) -> sessionmaker[Session]:
        return sessionmaker(bind=self.engine, expire_on_commit=False)

    # -- processes -----------------------------------------------------------------------

    def env(self, **extra: Any) -> dict[str, str]:
        settings = {
            "ENV": "test",
            "INSTANCE_PATH": str(self.instance),
            "DATABASE_URL": self.url,
            "STORAGE_DIR": str(self.storage_dir),
            "LOG_LEVEL": "WARNING",
            **self.settings,
        }
        settings.update({k: str(v) for k, v in extra.items()})
        return portal_env(**settings)

    def web(self, *, port: int | None = None, workers: int = 1, threads: int = 4) -> WebServer:
        """Start gunicorn with jobs sent to a broker nobody consumes; waits until it answers."""
        env = self.env(JOBS_INLINE="false")
        server = WebServer(
            env,
            self.tmp / "gunicorn.log",
            port=port or free_port(),
            workers=workers,
            threads=threads,
        )
        self.processes.append(server)
        server.start()
        server.wait_ready()
        return server

    def worker(self, queue: str, name: str, **settings: Any) -> CeleryWorker:
        env = self.env(BROKER_URL=f"{REDIS_BASE}/{WORKER_BROKER_DB}", **settings)
        worker = CeleryWorker(env, self.tmp / f"{name}.log", queue=queue, name=name)
        self.processes.append(worker)
        worker.start()
        return worker

    # -- data ----------------------------------------------------------------------------

    def create_donor(self, email: str | None = None) -> str:
        email = email or f"donor-{secrets.token_hex(4)}@example.org"
        with self.sessions() as session:
            accounts.create_user(session, email, PASSWORD, "donor")
            session.commit()
        return email

    def donor_client(self, server: WebServer, email: str | None = None) -> Client:
        """A donor created in the database, logged in and consenting over HTTP."""
        client = Client(server.port)
        client.login(self.create_donor(email))
        client.sign_consent()
        return client

    def app(self) -> Flask:
        """The portal app in this process (its jobs go to the broker nobody consumes)."""
        app = create_app(
            {
                "ENV": "test",
                "INSTANCE_PATH": str(self.instance),
                "DATABASE_URL": self.url,
                "STORAGE_DIR": str(self.storage_dir),
                "JOBS_INLINE": False,
            }
        )
        self.apps.append(app)
        return app

    def in_process_client(self, email: str | None = None) -> WsgiClient:
        """A donor logged in and consenting through the routes of an in-process app."""
        client = WsgiClient(self.app())
        client.login(self.create_donor(email))
        client.sign_consent()
        return client

    def store(self, session: Session) -> ObjectStore:
        """The instance's key file and this database's scope keys, over the storage folder."""
        return ObjectStore(
            LocalBackend(self.storage_dir),
            KeyRing.load(self.instance / "keys" / "kek.json"),
            DatabaseKeyStore(session),
        )

    def deid_key(self) -> bytes:
        return read_secret_file(self.instance / "keys" / "deid.key")

    def run_ingest(self, upload_id: str, *, final_attempt: bool = True) -> str:
        """The workers' use case, in this process (the same call the Celery task makes)."""
        return ingest.run_ingest_job(
            self.sessions, self.store, self.deid_key(), upload_id, final_attempt=final_attempt
        )

    # -- inspection ----------------------------------------------------------------------

    def upload(self, upload_id: str) -> Upload:
        with self.sessions() as session:
            upload = session.get(Upload, upload_id)
            assert upload is not None, f"no upload {upload_id}"
            return upload

    def parts(self, upload_id: str) -> list[UploadPart]:
        with self.sessions() as session:
            query = select(UploadPart).where(UploadPart.upload_id == upload_id)
            return list(session.scalars(query.order_by(UploadPart.offset)))

    def parts_sha256(self, upload_id: str) -> tuple[int, str]:
        """Decrypt the upload's parts in order: (bytes, SHA-256 of their concatenation).
        The parts must be contiguous from byte 0."""
        digest = hashlib.sha256()
        position = 0
        with self.sessions() as session:
            store = self.store(session)
            for part in self.parts(upload_id):
                assert part.offset == position, f"gap or overlap at byte {position}"
                with store.open(stored_info(part)) as reader:
                    while chunk := reader.read(1 << 20):
                        digest.update(chunk)
                        position += len(chunk)
        return position, digest.hexdigest()

    def files(self) -> list[DonatedFile]:
        with self.sessions() as session:
            return list(session.scalars(select(DonatedFile).order_by(DonatedFile.id)))

    def stored_objects(self) -> list[StoredObject]:
        with self.sessions() as session:
            return list(session.scalars(select(StoredObject)))

    def has_key(self, scope_id: str) -> bool:
        with self.sessions() as session:
            return session.get(ScopeKey, scope_id) is not None

    def objects_in_storage(self) -> set[str]:
        return set(LocalBackend(self.storage_dir).list())

    def partial_writes(self) -> list[str]:
        return sorted(p.name for p in (self.storage_dir / "tmp").glob("*.part"))

    def consent_id(self) -> str:
        with self.sessions() as session:
            return session.scalars(select(consent.Consent.id)).one()

    def kill_all(self) -> None:
        for process in reversed(self.processes):
            process.kill()
        for app in self.apps:
            app.extensions["portal_engine"].dispose()


def _create_database(kind: str, tmp: Path) -> tuple[str, Callable[[], None]]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp / 'portal.sqlite3'}"
        migrate.upgrade(url)
        return url, lambda: None
    url, admin = create_postgres_database()
    try:
        migrate.upgrade(url)
    except BaseException:
        drop_postgres_database(admin, url)
        raise
    return url, lambda: drop_postgres_database(admin, url)


def _portal(kind: str, tmp_path: Path) -> Iterator[Portal]:
    url, drop = _create_database(kind, tmp_path)
    instance = tmp_path / "instance"
    prepare_instance(instance)
    engine = make_engine(url)
    portal = Portal(kind, url, instance, tmp_path, engine, instance / "storage")
    try:
        with portal.sessions() as session:
            consent.publish_template(session, consent.default_template_spec())
            session.commit()
        yield portal
    finally:
        try:
            portal.kill_all()
        finally:
            engine.dispose()
            drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def portal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Portal]:
    """A portal on each database backend."""
    yield from _portal(request.param, tmp_path)


@pytest.fixture
def pg_portal(tmp_path: Path) -> Iterator[Portal]:
    """A portal on PostgreSQL only (row locks, backends to terminate)."""
    yield from _portal("postgresql", tmp_path)


def _require(message: str, exc: BaseException) -> None:
    if IN_CI:
        pytest.fail(f"{message} (CI=true requires it): {exc}", pytrace=False)
    pytest.skip(f"{message}; skipped")


@pytest.fixture
def redis_broker() -> Iterator[Callable[[int], Any]]:
    """Redis must answer (a failure in CI, a skip elsewhere); returns a client factory per
    database number."""
    import redis

    clients: list[Any] = []

    def client(db: int) -> Any:
        made = redis.Redis.from_url(f"{REDIS_BASE}/{db}", socket_connect_timeout=2)
        clients.append(made)
        return made

    try:
        client(WORKER_BROKER_DB).ping()
    except redis.RedisError as exc:
        _require(f"Redis at {REDIS_BASE} is unreachable", exc)
    yield client
    for made in clients:
        with contextlib.suppress(redis.RedisError):
            made.close()
