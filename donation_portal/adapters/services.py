"""Wiring of the libraries for the current app: storage, keys, the de-identification secret.

Loaded once per app and cached in ``app.extensions``; nothing is created at import time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from celery import Celery
from flask import Flask, current_app, g
from kombu.entity import Exchange, Queue
from kombu.transport import sqlalchemy as sqla_transport
from sqlalchemy.orm import Session, sessionmaker

from consent import ReceiptSigner, Sealer
from donation_portal.adapters.jobs import INGEST_TASK, CeleryQueue, InlineQueue, JobQueue
from donation_portal.adapters.jobs import QUEUE as INGEST_QUEUE
from donation_portal.adapters.keyfiles import read_secret_file
from donation_portal.adapters.keystore import DatabaseKeyStore
from storage import Backend, KeyRing, LocalBackend, ObjectStore, S3Backend

MAINTENANCE_QUEUE = "maintenance"
EMBEDDED_BROKER_POLL_SECONDS = 0.05


T = TypeVar("T")


def _cached(app: Flask, name: str, build: Callable[[], T]) -> T:
    cache = app.extensions.setdefault("portal_services", {})
    if name not in cache:
        cache[name] = build()
    # each name is only ever built by one caller, so the cached value is a T
    value: T = cache[name]
    return value


def keyring() -> KeyRing:
    """The KEK ring, reloaded when its key file changes.

    `keys rotate` and `keys retire` run in another process than the web workers; without
    the reload a worker would keep unwrapping with the versions it loaded at start-up and
    fail on every key re-wrapped under the new version.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.config.get("KEK"):
        return _cached(app, "keyring", lambda: KeyRing.from_env(app.config["KEK"]))
    path = app.config["KEY_FILE"]
    stamp = _file_stamp(path)
    cache = app.extensions.setdefault("portal_services", {})
    loaded = cache.get("keyring")
    if loaded is None or loaded[0] != stamp:
        cache["keyring"] = loaded = (stamp, KeyRing.load(path))
    ring: KeyRing = loaded[1]
    return ring


def _file_stamp(path: str) -> tuple[int, int, int]:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return (0, 0, 0)
    return (status.st_mtime_ns, status.st_size, status.st_ino)


def backend() -> Backend:
    """The configured backend: a local folder, or an S3 bucket (AWS, MinIO, Ceph RGW ...)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return _cached(app, "backend", lambda: make_backend(app.config))


def make_backend(config: Mapping[str, Any]) -> Backend:
    if config["STORAGE_BACKEND"] != "s3":
        return LocalBackend(config["STORAGE_DIR"])
    # boto3's usual credential chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and
    # AWS_SESSION_TOKEN), a profile, or an instance role; never a portal setting
    return S3Backend(
        config["S3_BUCKET"],
        config["S3_PREFIX"],
        endpoint_url=config["S3_ENDPOINT_URL"] or None,
        region_name=config["S3_REGION"] or None,
    )


def session_factory() -> sessionmaker[Session]:
    """Sessions of this app's database, for units of work outside a request (jobs)."""
    factory: sessionmaker[Session] = current_app.extensions["portal_sessionmaker"]
    return factory


def object_store(session: Session) -> ObjectStore:
    """An object store whose keys live in ``session``'s transaction."""
    return ObjectStore(backend(), keyring(), DatabaseKeyStore(session))


def deid_key() -> bytes:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return _cached(app, "deid_key", lambda: read_secret_file(app.config["DEID_KEY_FILE"]))


def sealer() -> Sealer:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return _cached(app, "sealer", lambda: Sealer(read_secret_file(app.config["SEAL_KEY_FILE"])))


def receipt_signer() -> ReceiptSigner:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return _cached(
        app,
        "receipt_signer",
        lambda: ReceiptSigner.load(app.config["RECEIPT_KEY_FILE"], app.config["RECEIPT_ISSUER"]),
    )


def job_queue() -> JobQueue:
    """Where ingest jobs go: the broker, or (JOBS_INLINE, tests) this app context's own list.

    The inline queue is run by :func:`run_inline_jobs` when the request or command ends,
    through the runner ``create_app`` registers (the same use case the workers call).
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.config["JOBS_INLINE"]:
        if "portal_inline_queue" not in g:
            g.portal_inline_queue = InlineQueue(app.extensions["portal_ingest_runner"])
        inline: InlineQueue = g.portal_inline_queue
        return inline
    return _cached(app, "job_queue", lambda: CeleryQueue(celery_producer(app.config)))


def run_inline_jobs(_exc: BaseException | None = None) -> None:
    """Run the jobs this request or command queued inline (a teardown hook)."""
    queue = g.get("portal_inline_queue")
    if queue is not None:
        queue.run_pending()


def celery_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the web processes (producers) and the workers agree on: broker, queues, format.

    The broker's visibility timeout (Redis, SQS) is JOB_STALLED_AFTER: a job that a worker
    took but did not acknowledge within it is delivered again, the same promise the
    ``requeue_stalled`` job keeps for work that never reached the broker.
    """
    return {
        "broker_url": config["BROKER_URL"],
        "broker_transport_options": _transport_options(config),
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 2,
        # a request must not hang on a broker outage: the send is retried briefly, then
        # logged, and requeue_stalled sends it later
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        "task_queues": [
            # kombu ships py.typed but leaves Queue/Exchange.__init__ unannotated
            Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
            for name in (INGEST_QUEUE, MAINTENANCE_QUEUE)
        ],
        "task_default_queue": MAINTENANCE_QUEUE,
        "task_routes": {
            INGEST_TASK: {"queue": INGEST_QUEUE},
            "portal.*": {"queue": MAINTENANCE_QUEUE},
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "timezone": "UTC",
        "enable_utc": True,
    }


def _transport_options(config: Mapping[str, Any]) -> dict[str, Any]:
    url = str(config["BROKER_URL"])
    if url.startswith(("redis://", "rediss://", "redis+socket://", "sqs://")):
        return {"visibility_timeout": int(config["JOB_STALLED_AFTER"])}
    if url.startswith("sqla+sqlite"):
        # the embedded broker (kombu hands these to create_engine): web and worker share it
        _poll_embedded_broker_often()
        return {"connect_args": {"timeout": 30}}
    return {}


def _poll_embedded_broker_often() -> None:
    """kombu's SQLAlchemy transport looks for new messages once a second, which caps the
    embedded broker of `make run` at about one job a second. Every transport option of it
    goes to ``create_engine``, so the interval can only be set on the transport class."""
    sqla_transport.Transport.polling_interval = EMBEDDED_BROKER_POLL_SECONDS


def celery_producer(config: Mapping[str, Any]) -> Celery:
    """A Celery app that only publishes by task name: the web process imports no task code."""
    producer = Celery("donation_portal.web", set_as_current=False)
    producer.conf.update(celery_settings(config))
    return producer


def forget(app: Flask) -> None:
    """Drop cached keys, e.g. after the key ring changed on disk."""
    app.extensions.pop("portal_services", None)
