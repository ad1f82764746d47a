"""The donor's journey: consent, upload, donation status, withdrawal."""

from __future__ import annotations

import secrets

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

import consent as consents
from donation_portal.adapters import services
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import FILE_PENDING_STATES, Donation, user_ref
from donation_portal.adapters.request_session import get_session
from donation_portal.web import receipt_pages as receipts
from donation_portal.web.logins import home_url
from donation_portal.web.pagination import paginate
from donation_portal.web.schemas import (
    SignConsentSchema,
    UploadSchema,
    WithdrawSchema,
    first_errors,
    load_form,
)
from donation_portal.web.security import public, role_required
from donation_portal.web.uploads import take_spooled
from donation_portal.workflows import uploads, whole_files, withdrawal
from donation_portal.workflows.listing import window

bp = Blueprint("donor", __name__)
STATUS_LABELS = {
    "waiting": "Waiting to be processed",
    "processing": "Being processed",
    "accepted": "Accepted",
    "needs_review": "Accepted, held for review",
    "rejected": "Not accepted",
    "duplicate": "Already donated",
    "cancelled": "Not processed",
    "erased": "Erased",
}
LANGUAGES = ("en", "de")


def _subject_ref() -> str:
    return user_ref(current_user.user.id)


def _active_consent() -> consents.Consent | None:
    return consents.active_consent(get_session(), _subject_ref())


@bp.get("/")
@public
def home() -> str | Response:
    if not current_user.is_authenticated:
        return render_template("index.html")
    if current_user.role != "donor":
        return redirect(home_url())
    session = get_session()
    mine = (
        select(Donation)
        .where(Donation.donor_id == current_user.user.id)
        .order_by(Donation.created_at.desc(), Donation.id)
    )
    donations = paginate(lambda limit, offset: window(session, mine, limit, offset))
    active = _active_consent()
    renewal = consents.needs_review(session, _subject_ref(), _language()) if active else None
    return render_template("donor/home.html", consent=active, donations=donations, renewal=renewal)


def _language() -> str:
    """The donor's language among those the consent text is published in."""
    return request.accept_languages.best_match(LANGUAGES) or "en"


@bp.route("/consent", methods=["GET", "POST"])
@role_required("donor")
def consent() -> str | Response | tuple[str, int]:
    session = get_session()
    active = _active_consent()
    renewal = consents.needs_review(session, _subject_ref(), _language()) if active else None
    template = renewal or consents.current_template(session, _language())
    if request.method == "GET":
        return render_template(
            "donor/consent.html", template=template, active=active, renewal=renewal
        )
    if active is not None and renewal is None:
        flash("You have already signed the consent.")
        return redirect(url_for("donor.upload"), 303)
    begin_write(session)  # SQLite: take the write lock now, not by upgrading this read
    try:
        data = load_form(SignConsentSchema(), request.form, lists=("modules",))
        if data["template_id"] != template.id:
            raise consents.InvalidSignature(
                "The consent text changed while you were reading it. Please read it again."
            )
        choice = {
            "template": template,
            "modules": data["modules"],
            "typed_name": data["full_name"],
            "sealer": services.sealer(),
        }
        if renewal is not None and active is not None:
            signed = consents.reconsent(session, previous=active, **choice)
        else:
            signed = consents.sign_consent(session, subject_ref=_subject_ref(), **choice)
    except ValidationError as error:
        return _consent_error(template, active, renewal, first_errors(error))
    except consents.ConsentError as error:
        return _consent_error(template, active, renewal, [str(error)])
    receipt = receipts.issue(session, signed.consent, signed.event, signed.withdrawal_code)
    session.commit()
    return render_template(
        "donor/signed.html",
        consent=signed.consent,
        withdrawal_code=signed.withdrawal_code,
        receipt=receipt,
        renewed=renewal is not None,
    )


def _consent_error(
    template: consents.ConsentTemplate,
    active: consents.Consent | None,
    renewal: consents.ConsentTemplate | None,
    errors: list[str],
) -> tuple[str, int]:
    """The form again with the errors, keeping what the donor chose and typed: a refused
    signature must not make them type their name again."""
    page = render_template(
        "donor/consent.html",
        template=template,
        active=active,
        renewal=renewal,
        errors=errors,
        chosen=request.form.getlist("modules"),
        typed_name=request.form.get("full_name", ""),
    )
    return page, 422


@bp.get("/consent/receipt")
@role_required("donor")
def receipt() -> str | Response:
    """A printable receipt of the donor's consent as it stands, signed afresh: the one given
    at signing may be lost. It cannot hold the withdrawal code, which the portal never keeps."""
    active = _active_consent()
    if active is None:
        flash("There is no consent in force to print a receipt of.")
        return redirect(url_for("donor.consent"))
    session = get_session()
    event = consents.events(session, active.id)[-1]
    return render_template("donor/receipt.html", receipt=receipts.issue(session, active, event))


@bp.route("/donations/new", methods=["GET", "POST"])
@role_required("donor")
def upload() -> str | Response | tuple[str, int]:
    """The upload page; its POST is the no-JavaScript fallback of the tus uploader."""
    active = _active_consent()
    if request.method == "GET":
        if active is None:
            flash("Please sign the consent before donating images.")
            return redirect(url_for("donor.consent"))
        return render_template("donor/upload.html", submission_key=secrets.token_hex(16))
    if active is None:
        return _upload_error(["Please sign the consent before donating images."], 409)
    session = get_session()
    uploads.end_read(session)  # nothing written: no transaction while the body is received
    try:
        data = load_form(UploadSchema(), request.form)
    except ValidationError:
        return _upload_error(["The form has expired. Please choose your files again."], 400)
    chosen = [bool(f.filename) for f in request.files.getlist("files")]
    received = take_spooled()
    spooled = [
        item for item, named in zip(received, chosen, strict=False) if named or item.info.size
    ]
    store = services.object_store(session)
    uploads.delete_quietly(store, [i.info.object_id for i in received if i not in spooled])
    if not spooled:
        return _upload_error(["Please choose at least one file."], 400)
    limit = int(current_app.config["MAX_FILE_BYTES"])
    too_large = [item for item in spooled if item.info.size > limit]
    if too_large:
        uploads.delete_quietly(store, [item.info.object_id for item in spooled])
        mib = f"{limit / 2**20:.0f} MiB"
        return _upload_error([f"{len(too_large)} file(s) are larger than the {mib} limit."], 413)
    try:
        donation, _ = whole_files.submit_parts(
            session,
            store,
            donor_id=current_user.user.id,
            active=active,
            submission_key=data["submission_key"],
            parts=[(item.info, item.key) for item in spooled],
            queue=services.job_queue(),
            limits=uploads.UploadLimits.from_settings(current_app.config),
            whole_form=True,
        )
    except uploads.SubmissionConflict:
        return _upload_error(["The form has expired. Please choose your files again."], 400)
    except uploads.UploadGone as error:
        return _upload_error([str(error)], 409)
    except uploads.LimitReached as error:
        return _upload_error([str(error)], 429)
    flash(f"{len(spooled)} file(s) received. They are being processed now.")
    return redirect(url_for("donor.donation", donation_id=donation.id), 303)


def _upload_error(errors: list[str], status: int) -> tuple[str, int]:
    page = render_template(
        "donor/upload.html", submission_key=secrets.token_hex(16), errors=errors
    )
    return page, status


@bp.get("/donations/<donation_id>")
@role_required("donor")
def donation(donation_id: str) -> str:
    found = _own_donation(donation_id)
    state = consents.state(get_session(), found.consent_id)
    return render_template(
        "donor/donation.html", donation=found, consent_state=state, STATUS_LABELS=STATUS_LABELS
    )


@bp.get("/donations/<donation_id>/status.json")
@role_required("donor")
def donation_status(donation_id: str) -> Response:
    """Each file's state, polled by the donation page so it updates without reloading."""
    found = _own_donation(donation_id)
    files = [
        {
            "position": row.position,
            "status": row.status,
            "label": STATUS_LABELS.get(row.status, row.status),
            "reason": row.reason,
        }
        for row in found.files
    ]
    pending = any(row.status in FILE_PENDING_STATES for row in found.files)
    return jsonify({"files": files, "pending": pending})


def _own_donation(donation_id: str) -> Donation:
    found = get_session().get(Donation, donation_id)
    if found is None or found.donor_id != current_user.user.id:
        abort(404)
    return found


@bp.route("/consent/withdraw", methods=["GET", "POST"])
@role_required("donor")
def withdraw() -> str | Response | tuple[str, int]:
    session = get_session()
    active = _active_consent()
    granted = consents.granted_modules(session, active.id) if active else []
    template = session.get(consents.ConsentTemplate, active.template_id) if active else None
    page = {"active": active, "granted": granted, "template": template}
    if request.method == "GET":
        return render_template("donor/withdraw.html", **page)
    if active is None:
        errors = ["There is no active consent to withdraw."]
        return render_template("donor/withdraw.html", errors=errors, **page), 409
    try:
        data = load_form(WithdrawSchema(), request.form, lists=("modules",))
        result = withdrawal.withdraw(
            session,
            active.id,
            services.object_store(session),
            mode=data["mode"],
            modules=data["modules"] if data["scope"] == "modules" else (),
            actor=_subject_ref(),
        )
    except ValidationError as error:
        return render_template("donor/withdraw.html", errors=first_errors(error), **page), 422
    except consents.ConsentError as error:
        return render_template("donor/withdraw.html", errors=[str(error)], **page), 409
    return withdrawal_confirmation(session, result)


def withdrawal_confirmation(session: Session, result: withdrawal.WithdrawalResult) -> str:
    """The confirmation page with the new signed receipt (also used without login)."""
    record = consents.get_consent(session, result.consent_id)
    event = consents.events(session, result.consent_id)[-1]
    receipt = receipts.issue(session, record, event)
    session.commit()
    return render_template("donor/withdrawn.html", result=result, receipt=receipt)
