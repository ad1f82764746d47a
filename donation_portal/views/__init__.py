"""Blueprints. Views stay thin: validate with a schema, call a service, render or redirect."""

from __future__ import annotations

from flask import Flask

from donation_portal import uploads


def init_app(app: Flask) -> None:
    from donation_portal.views import auth, donor, health, public, researcher, steward

    for module in (auth, donor, steward, researcher, health, public):
        app.register_blueprint(module.bp)
    app.after_request(uploads.discard_quarantine)
    app.teardown_request(uploads.discard_quarantine_on_error)
