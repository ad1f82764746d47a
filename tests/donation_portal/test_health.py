"""/healthz: database, broker, worker heartbeat and storage, each named when it fails.

The reply never carries versions, hosts or error messages (they go to the log).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from consent.db import utcnow
from donation_portal import __version__, create_app
from donation_portal.adapters.db import make_engine
from donation_portal.adapters.models import WorkerHeartbeat
from donation_portal.workflows import maintenance

HEALTHY = {"status": "ok", "database": "ok", "broker": "skipped", "worker": "skipped",
           "storage": "ok"}


@pytest.fixture
def make_app(
    app_config: dict[str, Any], session_factory: sessionmaker[Session]
) -> Callable[..., Flask]:
    """An app with some settings changed, on the test's database session."""
    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = create_app({**app_config, **overrides})
        app.extensions["portal_sessionmaker"] = session_factory
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["portal_engine"].dispose()


@pytest.fixture
def with_workers(make_app: Callable[..., Flask], instance_path: Path) -> Flask:
    """Jobs go to a broker (the embedded one: no server needed) and need a worker."""
    return make_app(JOBS_INLINE=False, BROKER_URL=f"sqla+sqlite:///{instance_path}/broker.db")


def _beat(db_session: Session, seconds_ago: float) -> None:
    db_session.add(WorkerHeartbeat(worker="w1", at=utcnow() - timedelta(seconds=seconds_ago)))
    db_session.commit()


def test_healthy(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == HEALTHY
    assert __version__ not in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"


def test_unwritable_storage_is_reported(app: Flask, client: FlaskClient) -> None:
    if os.geteuid() == 0:
        # root writes through permission bits: make the storage path a file instead.
        storage_dir = Path(app.config["STORAGE_DIR"])
        storage_dir.parent.mkdir(parents=True, exist_ok=True)
        if storage_dir.exists():
            storage_dir.rmdir()
        storage_dir.write_text("not a folder")
    else:
        Path(app.config["STORAGE_DIR"]).mkdir(parents=True, exist_ok=True)
        os.chmod(app.config["STORAGE_DIR"], 0o500)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["storage"] == "not writable"
    assert response.json["database"] == "ok"
    assert response.json["failed"] == ["storage"]


def test_storage_low_on_space_is_reported(make_app: Callable[..., Flask]) -> None:
    app = make_app(MIN_FREE_BYTES=2**62)  # more than any disk has free
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["storage"] == "low on space"
    assert response.json["failed"] == ["storage"]


class _Bucket:
    """Stands in for the S3 backend: only the cheap HEAD request is asked of it."""

    def __init__(self, error: Exception | None) -> None:
        self.bucket = "portal-test"
        self.client = self
        self.error = error
        self.heads: list[str] = []

    def head_bucket(self, Bucket: str) -> None:  # noqa: N803 - boto3's spelling
        self.heads.append(Bucket)
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("error", [None, ConnectionError("endpoint unreachable")])
def test_s3_storage_is_checked_with_a_head_request(
    make_app: Callable[..., Flask], error: Exception | None
) -> None:
    app = make_app(STORAGE_BACKEND="s3", S3_BUCKET="portal-test")
    bucket = _Bucket(error)
    app.extensions.setdefault("portal_services", {})["backend"] = bucket
    response = app.test_client().get("/healthz")
    assert bucket.heads == ["portal-test"]
    if error is None:
        assert response.status_code == 200
        assert response.json["storage"] == "ok"
    else:
        assert response.status_code == 503
        assert response.json["storage"] == "unreachable"
        assert "endpoint" not in response.get_data(as_text=True)


def test_unreachable_database_is_reported(app: Flask, client: FlaskClient) -> None:
    broken = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    app.extensions["portal_sessionmaker"] = sessionmaker(bind=broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["database"] == "unreachable"
    assert response.json["failed"] == ["database"]
    assert "127.0.0.1" not in response.get_data(as_text=True)
    broken.dispose()


def test_with_workers_a_reachable_broker_and_a_fresh_heartbeat_are_healthy(
    with_workers: Flask, db_session: Session
) -> None:
    _beat(db_session, 10)
    response = with_workers.test_client().get("/healthz")
    assert response.status_code == 200, response.json
    assert response.json == {**HEALTHY, "broker": "ok", "worker": "ok"}


def test_an_unreachable_broker_is_reported(
    make_app: Callable[..., Flask], db_session: Session
) -> None:
    _beat(db_session, 10)
    app = make_app(JOBS_INLINE=False, BROKER_URL="redis://127.0.0.1:1/0")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["broker"] == "unreachable"
    assert response.json["failed"] == ["broker"]
    assert "127.0.0.1" not in response.get_data(as_text=True)


@pytest.mark.parametrize(("seconds_ago", "expected"), [(None, "no heartbeat"),
                                                       (300, "no recent heartbeat")])
def test_a_missing_or_stale_worker_heartbeat_is_reported(
    with_workers: Flask, db_session: Session, seconds_ago: float | None, expected: str
) -> None:
    if seconds_ago is not None:
        _beat(db_session, seconds_ago)
    response = with_workers.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["worker"] == expected
    assert response.json["failed"] == ["worker"]


def test_a_heartbeat_recorded_by_the_use_case_counts(
    with_workers: Flask, db_session: Session
) -> None:
    maintenance.record_heartbeat(db_session, "worker@host")
    maintenance.record_heartbeat(db_session, "worker@host")  # an update, not a second row
    assert db_session.query(WorkerHeartbeat).count() == 1
    latest = maintenance.latest_heartbeat(db_session)
    assert latest is not None and utcnow() - latest < timedelta(seconds=5)
    assert with_workers.test_client().get("/healthz").status_code == 200


def test_with_the_database_down_the_heartbeat_is_unknown(with_workers: Flask) -> None:
    broken = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with_workers.extensions["portal_sessionmaker"] = sessionmaker(bind=broken)
    response = with_workers.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["database"] == "unreachable"
    assert response.json["worker"] == "unknown"
    broken.dispose()
