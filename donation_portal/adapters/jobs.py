"""Background jobs as seen by the code that asks for them: enqueue after the commit, by name.

A job is only ever sent once the transaction that asked for it has committed (so a worker
never looks for rows that do not exist yet, and a rolled-back request sends nothing). If the
broker cannot be reached then, the committed change stands: the failure is logged and the
scheduled ``requeue_stalled`` job sends the work again later.

Two queues: :class:`CeleryQueue` publishes to the broker by task name (the web process imports
no task code), :class:`InlineQueue` runs jobs in the same process at the end of the request or
command (tests, and one-off scripts), through the same runner the workers use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy.orm import Session

from donation_portal.adapters.db import on_commit

log = logging.getLogger(__name__)

INGEST_TASK = "portal.ingest_upload"
QUEUE = "ingest"


class JobQueue(Protocol):
    def send_ingest(self, upload_ids: Sequence[str]) -> None:
        """Ask for one ingest job per upload (called after the commit)."""
        ...


def ingest_after_commit(session: Session, queue: JobQueue, upload_ids: Sequence[str]) -> None:
    """Enqueue ingest jobs for ``upload_ids`` once ``session`` commits; never fail the commit."""
    ids = list(upload_ids)
    if not ids:
        return

    def send() -> None:
        try:
            queue.send_ingest(ids)
        except Exception:  # the reconciler re-sends; a committed upload must not become an error
            log.exception("could not enqueue %d ingest job(s); they will be re-sent", len(ids))

    on_commit(session, send)


class CeleryQueue:
    """Publishes by task name through a Celery app configured with the broker only."""

    def __init__(self, celery_app: Any) -> None:
        self._celery = celery_app

    def send_ingest(self, upload_ids: Sequence[str]) -> None:
        for upload_id in upload_ids:
            self._celery.send_task(INGEST_TASK, args=[upload_id], queue=QUEUE)


class InlineQueue:
    """Collects jobs and runs them when :meth:`run_pending` is called (end of request)."""

    def __init__(self, runner: Callable[[str], object]) -> None:
        self._runner = runner
        self._pending: list[str] = []

    def send_ingest(self, upload_ids: Sequence[str]) -> None:
        self._pending.extend(upload_ids)

    def run_pending(self) -> None:
        while self._pending:
            self._runner(self._pending.pop(0))
