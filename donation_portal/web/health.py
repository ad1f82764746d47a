"""``/healthz``: can this instance do its work right now?

Checks, each reported by name (``ok``, ``skipped`` or what is wrong; never versions, hosts
or error messages, which go to the log):

- ``database``: a ``SELECT 1``;
- ``broker``: a connection to BROKER_URL within a short timeout (skipped with JOBS_INLINE);
- ``worker``: a worker heartbeat younger than HEARTBEAT_MAX_AGE (skipped with JOBS_INLINE);
- ``storage``: the local folder is writable with at least MIN_FREE_BYTES free, or the S3
  bucket answers a HEAD request.

200 when every check passes, 503 otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app, jsonify
from kombu.connection import Connection
from sqlalchemy import text
from werkzeug.wrappers import Response

from consent.db import utcnow
from donation_portal.adapters import services
from donation_portal.adapters.request_session import get_session
from donation_portal.web.security import public
from donation_portal.workflows import maintenance

bp = Blueprint("health", __name__)

OK = "ok"
SKIPPED = "skipped"
HEARTBEAT_MAX_AGE = timedelta(minutes=2)  # workers beat every 30 s
BROKER_TIMEOUT_SECONDS = 2.0


@bp.get("/healthz")
@public
def healthz() -> tuple[Response, int]:
    config = current_app.config
    inline = bool(config.get("JOBS_INLINE"))
    checks = {"database": _database()}
    checks["broker"] = SKIPPED if inline else _broker(config["BROKER_URL"])
    if inline:
        checks["worker"] = SKIPPED
    elif checks["database"] != OK:
        checks["worker"] = "unknown"  # the heartbeats are in the database
    else:
        checks["worker"] = _worker()
    checks["storage"] = _storage(config)
    failed = sorted(name for name, result in checks.items() if result not in (OK, SKIPPED))
    body: dict[str, Any] = {"status": "unavailable" if failed else "ok", **checks}
    if failed:
        body["failed"] = failed
    return jsonify(body), 503 if failed else 200


def _database() -> str:
    session = get_session()
    try:
        session.execute(text("SELECT 1"))
        session.rollback()
    except Exception as error:  # noqa: BLE001 - any failure means unhealthy; the log says why
        current_app.logger.warning("health check: database unreachable (%s)", type(error).__name__)
        return "unreachable"
    return OK


def _broker(url: str) -> str:
    if not url:
        return "not configured"
    try:
        # kombu ships py.typed but leaves Connection.__init__ unannotated
        with Connection(  # type: ignore[no-untyped-call]
            url, connect_timeout=BROKER_TIMEOUT_SECONDS
        ) as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS
            )
    except Exception as error:  # noqa: BLE001
        current_app.logger.warning("health check: broker unreachable (%s)", type(error).__name__)
        return "unreachable"
    return OK


def _worker() -> str:
    try:
        latest = maintenance.latest_heartbeat(get_session())
        get_session().rollback()
    except Exception as error:  # noqa: BLE001
        current_app.logger.warning("health check: heartbeat unreadable (%s)", type(error).__name__)
        return "unknown"
    if latest is None:
        current_app.logger.warning("health check: no worker has ever recorded a heartbeat")
        return "no heartbeat"
    if utcnow() - latest > HEARTBEAT_MAX_AGE:
        current_app.logger.warning("health check: last worker heartbeat at %s", latest)
        return "no recent heartbeat"
    return OK


def _storage(config: Any) -> str:
    if config["STORAGE_BACKEND"] == "local":
        return _local_storage(config["STORAGE_DIR"], int(config["MIN_FREE_BYTES"]))
    try:
        backend = services.backend()
        client, bucket = getattr(backend, "client", None), getattr(backend, "bucket", None)
        if client is not None and bucket is not None:
            client.head_bucket(Bucket=bucket)
        else:
            next(iter(backend.list()), None)
    except Exception as error:  # noqa: BLE001
        current_app.logger.warning("health check: storage unreachable (%s)", type(error).__name__)
        return "unreachable"
    return OK


def _local_storage(root: str, min_free: int) -> str:
    try:
        os.makedirs(root, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".healthz-"):
            pass
        free = shutil.disk_usage(root).free
    except OSError as error:
        current_app.logger.warning("health check: storage not writable (%s)", error.strerror)
        return "not writable"
    if free < min_free:
        current_app.logger.warning(
            "health check: %d bytes free in the storage folder, below %d", free, min_free
        )
        return "low on space"
    return OK
