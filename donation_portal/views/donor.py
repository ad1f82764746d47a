"""The donor's journey: consent, upload, donation status, withdrawal."""

from __future__ import annotations

import secrets

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from marshmallow import ValidationError
from sqlalchemy import select
from werkzeug.wrappers import Response

import consent as consents
from donation_portal import services
from donation_portal.db import get_session
from donation_portal.ingest import SubmissionConflict, ingest_upload
from donation_portal.models import Donation
from donation_portal.schemas import (
    SignConsentSchema,
    UploadSchema,
    WithdrawSchema,
    first_errors,
    load_form,
)
from donation_portal.security import role_required
from donation_portal.views.auth import home_url
from donation_portal.withdrawal import withdraw_and_erase

bp = Blueprint("donor", __name__)


def _subject_ref() -> str:
    return f"user:{current_user.user.id}"


def _active_consent() -> consents.Consent | None:
    return consents.active_consent(get_session(), _subject_ref())


@bp.get("/")
def home() -> str | Response:
    if not current_user.is_authenticated:
        return render_template("index.html")
    if current_user.role != "donor":
        return redirect(home_url())
    session = get_session()
    donations = session.scalars(
        select(Donation)
        .where(Donation.donor_id == current_user.user.id)
        .order_by(Donation.created_at.desc())
    ).all()
    return render_template("donor/home.html", consent=_active_consent(), donations=donations)


@bp.route("/consent", methods=["GET", "POST"])
@role_required("donor")
def consent() -> str | Response | tuple[str, int]:
    session = get_session()
    template = consents.current_template(session)
    active = _active_consent()
    if request.method == "GET":
        return render_template("donor/consent.html", template=template, active=active)
    if active is not None:
        flash("You have already signed the consent.")
        return redirect(url_for("donor.upload"), 303)
    try:
        data = load_form(SignConsentSchema(), request.form, lists=("modules",))
        if data["template_id"] != template.id:
            raise consents.InvalidSignature(
                "The consent text changed while you were reading it. Please read it again."
            )
        consents.give_consent(
            session,
            subject_ref=_subject_ref(),
            template=template,
            modules=data["modules"],
            typed_name=data["full_name"],
            sealer=services.sealer(),
        )
    except ValidationError as error:
        return _consent_error(template, first_errors(error))
    except consents.ConsentError as error:
        return _consent_error(template, [str(error)])
    flash("Thank you. Your consent is recorded. You can now donate your images.")
    return redirect(url_for("donor.upload"), 303)


def _consent_error(template: consents.ConsentTemplate, errors: list[str]) -> tuple[str, int]:
    chosen = request.form.getlist("modules")
    page = render_template(
        "donor/consent.html", template=template, active=None, errors=errors, chosen=chosen
    )
    return page, 422


@bp.route("/donations/new", methods=["GET", "POST"])
@role_required("donor")
def upload() -> str | Response | tuple[str, int]:
    active = _active_consent()
    if request.method == "GET":
        if active is None:
            flash("Please sign the consent before donating images.")
            return redirect(url_for("donor.consent"))
        return render_template("donor/upload.html", submission_key=secrets.token_hex(16))
    if active is None:
        return _upload_error(["Please sign the consent before donating images."], 409)
    try:
        data = load_form(UploadSchema(), request.form)
    except ValidationError:
        return _upload_error(["The form has expired. Please choose your files again."], 400)
    files = [f for f in request.files.getlist("files") if f.filename or f.content_length]
    if not files:
        return _upload_error(["Please choose at least one file."], 400)
    session = get_session()
    try:
        result = ingest_upload(
            session,
            donor_id=current_user.user.id,
            consent=active,
            submission_key=data["submission_key"],
            files=[f.stream for f in files],
            store=services.object_store(session),
            deid_key=services.deid_key(),
            max_file_bytes=int(current_app.config["MAX_FILE_BYTES"]),
        )
    except SubmissionConflict:
        return _upload_error(["The form has expired. Please choose your files again."], 400)
    if result.donation is None:
        return _upload_error(
            ["None of the files could be accepted. Nothing was stored."], 422, result.outcomes
        )
    if not result.repeated:
        flash(f"{result.accepted} of {len(result.outcomes)} file(s) accepted.")
    return redirect(url_for("donor.donation", donation_id=result.donation.id), 303)


def _upload_error(errors: list[str], status: int, outcomes: list | None = None) -> tuple[str, int]:
    page = render_template(
        "donor/upload.html",
        submission_key=secrets.token_hex(16),
        errors=errors,
        outcomes=outcomes or [],
    )
    return page, status


@bp.get("/donations/<donation_id>")
@role_required("donor")
def donation(donation_id: str) -> str:
    found = get_session().get(Donation, donation_id)
    if found is None or found.donor_id != current_user.user.id:
        abort(404)
    state = consents.state(get_session(), found.consent_id)
    return render_template("donor/donation.html", donation=found, consent_state=state)


@bp.route("/consent/withdraw", methods=["GET", "POST"])
@role_required("donor")
def withdraw() -> str | Response | tuple[str, int]:
    active = _active_consent()
    if request.method == "GET":
        return render_template("donor/withdraw.html", active=active)
    if active is None:
        return render_template(
            "donor/withdraw.html", active=None, errors=["There is no active consent to withdraw."]
        ), 409
    try:
        load_form(WithdrawSchema(), request.form)
    except ValidationError as error:
        return render_template(
            "donor/withdraw.html", active=active, errors=first_errors(error)
        ), 422
    session = get_session()
    erased = withdraw_and_erase(session, active, services.object_store(session))
    flash(
        f"Your consent is withdrawn. The key to your {erased} stored file(s) has been destroyed; "
        "nobody can read them any more."
    )
    return redirect(url_for("donor.home"), 303)
