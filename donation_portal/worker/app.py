"""The Celery app factory: configured from the Flask app's settings, tasks in its app context."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import structlog
from celery import Celery, Task
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_ready,
)
from flask import Flask

from donation_portal.adapters import logs, services
from donation_portal.adapters.request_session import get_session
from donation_portal.adapters.services import MAINTENANCE_QUEUE
from donation_portal.worker import tasks
from donation_portal.workflows import maintenance

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = timedelta(seconds=30)
REQUEUE_EVERY = timedelta(minutes=1)
RECONCILE_EVERY = timedelta(minutes=3)
EXPIRE_EVERY = timedelta(minutes=10)
SWEEP_EVERY = timedelta(hours=1)


def make_celery(flask_app: Flask) -> Celery:
    """A Celery app whose tasks run inside ``flask_app``'s app context."""

    class FlaskTask(Task):  # type: ignore[misc]  # celery ships no type information
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with flask_app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(flask_app.import_name, task_cls=FlaskTask, set_as_current=False)
    celery.conf.update(worker_settings(flask_app.config))
    celery.flask_app = flask_app
    tasks.register(celery)
    worker_process_init.connect(
        _fresh_connections(flask_app), weak=False, dispatch_uid=f"portal-{id(flask_app)}"
    )
    worker_ready.connect(
        _first_heartbeat(celery, flask_app), weak=False, dispatch_uid=f"portal-{id(celery)}"
    )
    # the app factory has set up the JSON logs; a receiver here keeps Celery from adding
    # its own handlers (each line twice, in another format)
    setup_logging.connect(_log_level, weak=False, dispatch_uid="portal-logs")
    task_prerun.connect(_bind_task, weak=False, dispatch_uid="portal-logs")
    task_postrun.connect(_unbind_task, weak=False, dispatch_uid="portal-logs")
    return celery


def worker_settings(config: dict[str, Any]) -> dict[str, Any]:
    settings = services.celery_settings(config)
    settings.update(
        # a job is acknowledged when it has finished, not when it starts: a worker that dies
        # mid-job (OOM, SIGKILL, a lost node) leaves the message to be delivered again
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # one job at a time per process: a long ingest never holds others back
        worker_prefetch_multiplier=1,
        beat_schedule=beat_schedule(),
        beat_schedule_filename=os.path.join(config["INSTANCE_PATH"], "celerybeat-schedule"),
        worker_hijack_root_logger=False,
    )
    return settings


def beat_schedule() -> dict[str, dict[str, Any]]:
    """The periodic jobs; each expires after its interval, so a backlog never piles up."""

    def every(task: str, interval: timedelta) -> dict[str, Any]:
        seconds = interval.total_seconds()
        return {
            "task": task,
            "schedule": interval,
            "options": {"queue": MAINTENANCE_QUEUE, "expires": seconds},
        }

    return {
        "heartbeat": every("portal.heartbeat", HEARTBEAT_EVERY),
        "requeue-stalled": every("portal.requeue_stalled", REQUEUE_EVERY),
        "reconcile-storage": every("portal.reconcile", RECONCILE_EVERY),
        "expire-uploads": every("portal.expire_uploads", EXPIRE_EVERY),
        "sweep-quarantine": every("portal.sweep", SWEEP_EVERY),
    }


def _fresh_connections(flask_app: Flask) -> Any:
    def dispose(**_: Any) -> None:
        # a forked pool process must not share the parent's pooled database connections
        flask_app.extensions["portal_engine"].dispose(close=False)

    return dispose


def _log_level(loglevel: int | str | None = None, **_: Any) -> None:
    """``celery worker|beat --loglevel``, for every logger (what Celery itself would set)."""
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def _bind_task(task_id: str, task: Task, **_: Any) -> None:
    """A job's log lines carry its task ID, and the ID of the request that enqueued it
    (``adapters.logs`` sends it along as a message header)."""
    structlog.contextvars.clear_contextvars()
    context = {"task_id": task_id, "task": task.name}
    enqueued_by = logs.safe_request_id(getattr(task.request, "request_id", None))
    if enqueued_by:
        context["request_id"] = enqueued_by
    structlog.contextvars.bind_contextvars(**context)


def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


def _first_heartbeat(celery: Celery, flask_app: Flask) -> Any:
    """A worker records its heartbeat as soon as it is ready, not 30 s later at beat's first
    tick: /healthz of a fresh deployment turns healthy when a worker is really there."""

    def beat(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not celery:
            return
        with flask_app.app_context():
            try:
                maintenance.record_heartbeat(get_session(), sender.hostname)
            except Exception:  # the scheduled heartbeat tries again; the worker runs on
                log.exception("could not record the first heartbeat of %s", sender.hostname)

    return beat
