"""Researcher access: profiles, purpose-matched requests, steward decisions, encrypted releases."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the research blueprints; four-eyes approval is on unless configured off."""
    from donation_portal.research import api, releases, views

    app.config.setdefault("RESEARCH_FOUR_EYES", True)
    app.register_blueprint(views.researcher_bp)
    app.register_blueprint(views.steward_bp)
    app.register_blueprint(api.bp)
    app.register_error_handler(releases.ResearchError, views.refused)
