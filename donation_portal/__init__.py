"""The donation portal's web app: it composes the consent, anonymize and storage libraries."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask

__version__ = "0.1.0"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` overrides files and environment (tests pass theirs here)."""
    from donation_portal import cli, web
    from donation_portal.adapters import logs, request_session, services
    from donation_portal.adapters.settings import load_settings

    config = dict(config or {})
    instance_path = config.pop("INSTANCE_PATH", None) or os.environ.get("PORTAL_INSTANCE_PATH")
    app = Flask(
        __name__,
        instance_path=instance_path,
        instance_relative_config=True,
        template_folder="web/templates",
        static_folder="web/static",
    )
    settings = load_settings(app.instance_path, config)
    app.config.update(settings)
    app.config.update(
        MAX_CONTENT_LENGTH=int(settings["MAX_BODY_BYTES"]),  # raised per endpoint: web.limits
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(settings["SESSION_COOKIE_SECURE"]),
        SESSION_COOKIE_PATH="/",  # what a __Host- cookie needs (and no Domain: Flask sets none)
        # the cookie's own expiry; the server enforces the idle and absolute limits: web.sessions
        PERMANENT_SESSION_LIFETIME=timedelta(hours=int(settings["SESSION_ABSOLUTE_HOURS"])),
        WTF_CSRF_TIME_LIMIT=None,
        VERSION=__version__,
    )
    if settings["ENV"] == "production":
        app.config.update(SESSION_COOKIE_SECURE=True, PREFERRED_URL_SCHEME="https")
    logs.configure()
    logging.getLogger("donation_portal").setLevel(settings["LOG_LEVEL"])
    app.request_class = web.uploads.EncryptingRequest
    logs.init_app(app)  # first: every later hook logs with the request ID
    request_session.init_app(app)
    # JOBS_INLINE: jobs queued by a request or command run when it ends (after its commit)
    app.extensions["portal_ingest_runner"] = functools.partial(_run_ingest_inline, app)
    app.teardown_request(services.run_inline_jobs)
    app.teardown_appcontext(services.run_inline_jobs)
    web.init_app(app)
    cli.init_app(app)
    return app


def _run_ingest_inline(app: Flask, upload_id: str) -> str | None:
    """The inline queue's runner: the workers' use case, in a fresh app context, one attempt."""
    from donation_portal.worker import tasks
    from donation_portal.workflows import ingest

    with app.app_context():
        try:
            return tasks.run_ingest(upload_id, final_attempt=True)
        except ingest.RetryLater:  # no broker to retry through; requeue_stalled sends it again
            logging.getLogger(__name__).warning(
                "inline ingest of upload %s must be retried later", upload_id, exc_info=True
            )
            return None
