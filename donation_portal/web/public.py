"""Pages anyone may use without an account: check a receipt, withdraw with the receipt's code."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request
from marshmallow import ValidationError
from werkzeug.wrappers import Response

import consent as consents
from donation_portal.adapters import services
from donation_portal.adapters.request_session import get_session
from donation_portal.web import receipt_pages as receipts
from donation_portal.web.donor import withdrawal_confirmation
from donation_portal.web.schemas import CodeWithdrawSchema, first_errors, load_form
from donation_portal.web.security import limiter, public
from donation_portal.workflows import withdrawal

bp = Blueprint("public", __name__)
MAX_RECEIPT_UPLOAD = consents.receipts.MAX_RECEIPT_BYTES
# One message for an unknown consent ID and a wrong code: an attacker learns neither.
NO_MATCH = "The consent ID and the withdrawal code do not match. Please check them on your receipt."


def withdraw_rate_limit() -> str:
    limit: str = current_app.config["WITHDRAW_RATE_LIMIT"]
    return limit


@bp.get("/.well-known/receipt-keys.json")
@public
def receipt_keys() -> Response:
    """The public keys receipts are signed with (a JWK Set), for checking them elsewhere."""
    return jsonify(services.receipt_signer().public_jwks())


@bp.route("/receipts/verify", methods=["GET", "POST"])
@public
def verify_receipt() -> str | tuple[str, int]:
    if request.method == "GET":
        return render_template("public/verify_receipt.html")
    upload = request.files.get("receipt_file")
    document = upload.stream.read(MAX_RECEIPT_UPLOAD + 1) if upload and upload.filename else b""
    document = document or request.form.get("receipt_text", "").encode("utf-8")
    if not document.strip():
        errors = ["Choose your receipt file (.json) or paste its text."]
        return render_template("public/verify_receipt.html", errors=errors), 422
    try:
        content = receipts.verify(document)
    except consents.InvalidReceipt as error:
        return render_template("public/verify_receipt.html", errors=[str(error)], invalid=True), 422
    try:
        status = consents.state(get_session(), content["consent_id"])
    except consents.UnknownConsent:  # signed here, but the consent is not (or no longer) here
        status = None
    return render_template("public/verify_receipt.html", receipt=content, current_state=status)


@bp.route("/withdraw", methods=["GET", "POST"])
@public
@limiter.limit(withdraw_rate_limit, methods=["POST"])
def withdraw() -> str | tuple[str, int]:
    if request.method == "GET":
        return render_template("public/withdraw.html", form={})
    form = {k: v for k, v in request.form.items() if k in ("consent_id",)}
    session = get_session()
    try:
        data = load_form(CodeWithdrawSchema(), request.form, lists=("modules",))
        result = withdrawal.withdraw(
            session,
            data["consent_id"].strip().lower(),
            services.object_store(session),
            mode=data["mode"],
            modules=data["modules"] if data["scope"] == "modules" else (),
            code=data["code"].strip(),
        )
    except ValidationError as error:
        return render_template("public/withdraw.html", errors=first_errors(error), form=form), 422
    except (consents.UnknownConsent, consents.WrongWithdrawalCode):
        return render_template("public/withdraw.html", errors=[NO_MATCH], form=form), 403
    except consents.ConsentError as error:
        return render_template("public/withdraw.html", errors=[str(error)], form=form), 409
    return withdrawal_confirmation(session, result)
