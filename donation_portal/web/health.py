"""``/healthz``: is the database reachable, the storage writable; which version runs."""

from __future__ import annotations

import os
import tempfile

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from werkzeug.wrappers import Response

from donation_portal.adapters.request_session import get_session

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    checks = {"database": _database_ok(), "storage": _storage_ok()}
    healthy = all(checks.values())
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": "ok" if checks["database"] else "unreachable",
        "storage": "ok" if checks["storage"] else "not writable",
        "version": current_app.config["VERSION"],
    }
    return jsonify(body), 200 if healthy else 503


def _database_ok() -> bool:
    try:
        get_session().execute(text("SELECT 1"))
    except Exception:  # any failure means unhealthy; the reason goes to the log, not the reply
        current_app.logger.exception("health check: database unreachable")
        return False
    return True


def _storage_ok() -> bool:
    root = current_app.config["STORAGE_DIR"]
    try:
        os.makedirs(root, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".healthz-"):
            pass
    except OSError:
        current_app.logger.exception("health check: storage not writable")
        return False
    return True
