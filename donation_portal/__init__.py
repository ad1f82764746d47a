"""The donation portal's web app: it composes the consent, anonymize and storage libraries."""

from __future__ import annotations

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
    from donation_portal.adapters import request_session
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
        MAX_CONTENT_LENGTH=int(settings["MAX_REQUEST_BYTES"]),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(settings["SESSION_COOKIE_SECURE"]),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        WTF_CSRF_TIME_LIMIT=None,
        VERSION=__version__,
    )
    if settings["ENV"] == "production":
        app.config.update(SESSION_COOKIE_SECURE=True, PREFERRED_URL_SCHEME="https")
    logging.getLogger("donation_portal").setLevel(settings["LOG_LEVEL"])
    app.request_class = web.uploads.EncryptingRequest
    request_session.init_app(app)
    web.init_app(app)
    cli.init_app(app)
    return app
