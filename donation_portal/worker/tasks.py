"""The tasks, by name; each one unit of work calling a use case from ``workflows``.

Retryable errors (``RetryLater``: the database or the storage is unreachable right now)
retry with exponential back-off and jitter; any other error fails loudly (logged with its
traceback by Celery) and the job's state in the database tells what happened.
"""

from __future__ import annotations

import logging
import random
import socket

from celery import Celery, Task
from flask import current_app

from donation_portal.adapters import services
from donation_portal.adapters.jobs import INGEST_TASK, CeleryQueue
from donation_portal.adapters.request_session import get_session
from donation_portal.workflows import ingest, maintenance, uploads

log = logging.getLogger(__name__)

BACKOFF_BASE = 5.0  # seconds before the first retry (half of it at least)
BACKOFF_CAP = 300.0  # never longer, and well inside the broker's visibility timeout


def backoff(retries: int, *, cap: float = BACKOFF_CAP) -> float:
    """Seconds before retry number ``retries + 1``: doubling, capped, half of it random."""
    delay: float = min(cap, BACKOFF_BASE * 2**retries)  # int ** int is Any in typeshed
    return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 (spreading, not secrecy)


def run_ingest(upload_id: str, *, final_attempt: bool) -> str:
    """The ingest use case with this app's database, storage and key, inside its app context
    (the task below, and the inline queue of tests and one-off commands)."""
    return ingest.run_ingest_job(
        services.session_factory(),
        services.object_store,
        services.deid_key(),
        upload_id,
        final_attempt=final_attempt,
        max_file_bytes=int(current_app.config["MAX_FILE_BYTES"]),
    )


def register(celery: Celery) -> None:
    @celery.task(name=INGEST_TASK, bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery is untyped
    def ingest_upload(self: Task, upload_id: str) -> str:
        """De-identify and store one upload; ``final_attempt`` on the last try."""
        config = current_app.config
        attempts = int(config["JOB_MAX_ATTEMPTS"])
        retries = self.request.retries or 0
        final = retries + 1 >= attempts
        try:
            return run_ingest(upload_id, final_attempt=final)
        except ingest.RetryLater as exc:
            if final:
                log.error(
                    "upload %s: still failing after %d attempts; requeue_stalled sends it again",
                    upload_id,
                    attempts,
                )
                raise
            cap = min(BACKOFF_CAP, int(config["JOB_STALLED_AFTER"]) / 2)
            raise self.retry(
                exc=exc, countdown=backoff(retries, cap=cap), max_retries=attempts - 1
            ) from exc

    @celery.task(name="portal.expire_uploads", shared=False)  # type: ignore[untyped-decorator]  # celery is untyped
    def expire_uploads() -> int:
        """Destroy unfinished uploads past UPLOAD_EXPIRY (tus expiration)."""
        session = get_session()
        return uploads.expire_uploads(session, services.object_store(session))

    @celery.task(name="portal.requeue_stalled", bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery is untyped
    def requeue_stalled(self: Task) -> int:
        """Send again the ingest jobs of uploads queued or processing for too long."""
        return ingest.requeue_stalled(
            get_session(), CeleryQueue(self.app), int(current_app.config["JOB_STALLED_AFTER"])
        )

    @celery.task(name="portal.reconcile", shared=False)  # type: ignore[untyped-decorator]  # celery is untyped
    def reconcile() -> None:
        """Remove objects no row records, once older than ORPHAN_GRACE."""
        session = get_session()
        report = maintenance.reconcile_storage(
            session, services.object_store(session), int(current_app.config["ORPHAN_GRACE"])
        )
        log.info("reconcile: %s", report.counts())

    @celery.task(name="portal.sweep", shared=False)  # type: ignore[untyped-decorator]  # celery is untyped
    def sweep() -> None:
        """Crypto-shred raw-upload quarantine left behind, older than QUARANTINE_MAX_AGE."""
        session = get_session()
        report = maintenance.sweep_quarantine(
            session,
            services.object_store(session),
            int(current_app.config["QUARANTINE_MAX_AGE"]),
        )
        log.info(
            "sweep: %d quarantine key(s) shredded, %d object(s), %d partial write(s) removed",
            len(report.shredded_scopes),
            len(report.deleted_objects),
            report.removed_partials,
        )

    @celery.task(name="portal.heartbeat", bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery is untyped
    def heartbeat(self: Task) -> None:
        """Record that this worker is alive; /healthz reads the latest heartbeat."""
        maintenance.record_heartbeat(get_session(), self.request.hostname or socket.gethostname())
