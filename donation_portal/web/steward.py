"""Steward pages: consents, review queues, withdrawals, templates, and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from marshmallow import ValidationError
from werkzeug.wrappers import Response

import consent as consents
from donation_portal.adapters import services
from donation_portal.adapters.request_session import get_session
from donation_portal.web.pagination import paginate
from donation_portal.web.schemas import AuditFilterSchema, DecisionSchema, first_errors, load_form
from donation_portal.web.security import role_required
from donation_portal.workflows import previews, releases, review

bp = Blueprint("steward", __name__, url_prefix="/steward")
STAFF = ("steward", "admin")


@bp.get("/", endpoint="consents")
@role_required(*STAFF)
def consents_page() -> str:
    session = get_session()
    page = paginate(lambda limit, offset: review.consents_page(session, limit, offset))
    state = consents.states(session, [row.id for row in page.items])
    expiring = review.expiring_consents(session)
    return render_template("steward/consents.html", consents=page, state=state, expiring=expiring)


@bp.get("/consents/<consent_id>/fhir")
@role_required(*STAFF)
def consent_fhir(consent_id: str) -> Response:
    try:
        resource = review.export_consent(get_session(), consent_id, current_user.user)
    except consents.UnknownConsent:
        abort(404)
    response = jsonify(resource)
    response.mimetype = "application/fhir+json"
    return response


@bp.get("/templates")
@role_required(*STAFF)
def templates() -> str:
    session = get_session()
    page = paginate(lambda limit, offset: review.templates_page(session, limit, offset))
    return render_template("steward/templates.html", templates=page)


@bp.get("/donations")
@role_required(*STAFF)
def donations() -> str:
    return _donations_page()[0]


def _donations_page(errors: list[str] | None = None, status: int = 200) -> tuple[str, int]:
    session = get_session()
    rows = paginate(
        lambda limit, offset: review.donations_page(session, limit, offset),
        endpoint="steward.donations",
    )
    held = paginate(
        lambda limit, offset: review.files_awaiting_review(session, limit, offset),
        "held_",
        endpoint="steward.donations",
    )
    page = render_template(
        "steward/donations.html",
        donations=rows,
        counts=review.file_counts(session, [row.id for row in rows.items]),
        state=consents.states(session, {row.consent_id for row in rows.items}),
        quarantined=held,
        errors=errors,
    )
    return page, status


@bp.post("/donations/<donation_id>/decision")
@role_required(*STAFF)
def decide_donation(donation_id: str) -> Response | tuple[str, int]:
    session = get_session()
    try:
        data = load_form(DecisionSchema(), request.form)
        review.decide_donation(
            session,
            donation_id,
            current_user.user,
            approve=data["decision"] == "approve",
            reason=data["reason"],
        )
    except ValidationError as error:
        return _donations_page(first_errors(error), 400)
    except review.ReviewError as error:
        return _donations_page([str(error)], 409)
    flash("Decision recorded.")
    return redirect(url_for("steward.donations"), 303)


@bp.post("/files/<int:file_id>/decision")
@role_required(*STAFF)
def decide_file(file_id: int) -> Response | tuple[str, int]:
    session = get_session()
    try:
        data = load_form(DecisionSchema(), request.form)
        review.decide_file(
            session,
            file_id,
            current_user.user,
            services.object_store(session),
            release=data["decision"] == "approve",
        )
    except ValidationError as error:
        return _donations_page(first_errors(error), 400)
    except review.ReviewError as error:
        return _donations_page([str(error)], 409)
    flash("Decision recorded.")
    return redirect(url_for("steward.donations"), 303)


@bp.get("/files/<int:file_id>/preview.png")
@role_required(*STAFF)
def file_preview(file_id: int) -> Response:
    """The held file's de-identified image (or an image saying why there is none), with
    its context in headers; never cached, like every response of a logged-in user."""
    try:
        preview = previews.preview_file(
            get_session(), services.object_store(get_session()), file_id, current_user.user
        )
    except previews.PreviewError as error:
        abort(error.status, str(error))
    response = Response(preview.body, mimetype=preview.media_type)
    context = {
        "X-Preview-Modality": preview.modality,
        "X-Preview-Body-Part": preview.body_part,
        "X-Preview-Held-Because": preview.held_because,
        "X-Preview-Frames": preview.frames,
        "X-Preview-Size": f"{preview.columns}x{preview.rows}" if preview.rows else None,
    }
    response.headers.extend({name: str(value) for name, value in context.items() if value})
    return response


@bp.get("/withdrawals")
@role_required(*STAFF)
def withdrawals() -> str:
    return _withdrawals_page()[0]


def _withdrawals_page(errors: list[str] | None = None, status: int = 200) -> tuple[str, int]:
    session = get_session()
    items = paginate(
        lambda limit, offset: review.withdrawals(session, limit, offset),
        endpoint="steward.withdrawals",
    )
    touched = releases.releases_touched(session, [item.event.id for item in items.items])
    page = render_template("steward/withdrawals.html", items=items, touched=touched, errors=errors)
    return page, status


@bp.post("/withdrawals/<int:event_id>/acknowledge")
@role_required(*STAFF)
def acknowledge(event_id: int) -> Response | tuple[str, int]:
    try:
        review.acknowledge_withdrawal(get_session(), event_id, current_user.user)
    except review.ReviewError as error:
        return _withdrawals_page([str(error)], 409)
    flash("Withdrawal acknowledged.")
    return redirect(url_for("steward.withdrawals"), 303)


@bp.get("/audit")
@role_required(*STAFF)
def audit() -> str | tuple[str, int]:
    session = get_session()
    try:
        filters = AuditFilterSchema().load(
            {k: v for k, v in request.args.items() if v}, unknown="exclude"
        )
    except ValidationError as error:
        return render_template(
            "steward/audit.html", entries=[], filters={}, errors=first_errors(error)
        ), 400
    since, until = filters.pop("since"), filters.pop("until")
    entries = consents.audit.query(
        session,
        since=datetime.combine(since, time(), UTC) if since else None,
        until=datetime.combine(until, time(), UTC) + timedelta(days=1) if until else None,
        limit=100,
        **filters,
    )
    shown = {k: v for k, v in request.args.items() if k != "before_id"}
    return render_template("steward/audit.html", entries=entries, filters=shown)
