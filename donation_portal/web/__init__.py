"""The web layer: blueprints, schemas, templates and request hooks.

Views stay thin: validate with a schema, call a use case from ``workflows``, render or redirect.
"""

from __future__ import annotations

from flask import Flask

from donation_portal.web import uploads


def init_app(app: Flask) -> None:
    """Register every blueprint; four-eyes approval is on unless configured off."""
    from donation_portal.web import (
        account,
        api,
        auth,
        donor,
        errors,
        headers,
        health,
        limits,
        markdown,
        mfa,
        public,
        research,
        researcher,
        security,
        steward,
        tus,
    )
    from donation_portal.workflows import releases

    app.url_map.converters["int"] = limits.SqlInteger  # before any rule uses it
    security.init_app(app)
    headers.init_app(app)
    mfa.init_app(app)  # after security: its check reads the session security has checked
    app.config.setdefault("RESEARCH_FOUR_EYES", True)
    account.init_app(app)
    for module in (auth, donor, steward, researcher, health, public):
        app.register_blueprint(module.bp)
    app.register_blueprint(research.researcher_bp)
    app.register_blueprint(research.steward_bp)
    app.register_blueprint(api.bp)
    app.register_error_handler(releases.ResearchError, research.refused)
    errors.init_app(app)
    app.register_blueprint(tus.bp)
    app.teardown_request(uploads.discard_unclaimed)
    app.add_template_filter(markdown.render_markdown, "markdown")
