"""Second factors on the web: the login's second step, enrolment, and step-up.

A login of an account with a second factor stops after the password: the session holds only
which account is half logged in (for ``PENDING_MINUTES``) until a code from the app, a
security key's answer or a recovery code completes it. Stewards, admins and researchers
without a second factor are logged in but can reach nothing except enrolment (and logging
out) until they have one; the flag that says so lives in the signed session, so other
requests cost no query.

Step-up: views decorated with ``step_up_required`` (approving or downloading a release,
reading an ethics document, creating a token, changing the second factor) need a code (or a
key) within the last ``STEP_UP_MINUTES``; otherwise the user is asked for one and sent back.

Security keys: the page's script (``static/security-key.js``) fetches a ceremony's options
as JSON from an endpoint here, asks the browser's key, and submits the answer as the form
field ``credential`` of an ordinary form; the forms that take a code take that field too.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

import segno
from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user
from markupsafe import Markup
from werkzeug.wrappers import Response

from donation_portal.adapters.models import User
from donation_portal.adapters.request_session import get_session
from donation_portal.adapters.settings import webauthn_origin
from donation_portal.web import sessions
from donation_portal.web.errors import problem, wants_json
from donation_portal.web.limits import MAX_SQL_INTEGER
from donation_portal.web.logins import home_url, start_session
from donation_portal.web.security import LoginUser, limiter, logged_in, login_rate_limit, public
from donation_portal.workflows import mfa, security_keys

bp = Blueprint("mfa", __name__)
F = TypeVar("F", bound=Callable[..., Any])

PENDING = "_mfa_pending"  # {"user": id, "at": seconds, "fails": n}: password right, code due
VERIFIED_AT = "_mfa_at"  # seconds since the epoch of the latest second factor typed
ENROL_REQUIRED = "_mfa_enrol"  # logged in, but only enrolment is open until it is done
PENDING_MINUTES = 5
STEP_UP_MINUTES = 5
MAX_FAILURES = 5  # wrong codes in one half-finished login before the password is due again
_OPEN_WHILE_ENROLLING = ("auth.logout", "static")
_NO_KEYS = "Security keys are not available on this server."


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.before_request(_hold_until_enrolled)


def after_password(user: LoginUser) -> Response:
    """The password was right: ask for the second factor, or log in (and send someone whose
    role needs a second factor but has none to set one up)."""
    if mfa.is_enrolled(get_session(), user.user):
        session.clear()
        session[PENDING] = {"user": user.user.id, "at": sessions.now(), "fails": 0}
        return redirect(url_for("mfa.verify_login"), 303)
    start_session(user)
    if mfa.required_for(user.user):
        session[ENROL_REQUIRED] = True
        flash("Your role needs a second factor. Please set up an authenticator app or a key now.")
        return redirect(url_for("mfa.settings"), 303)
    return redirect(home_url(), 303)


def step_up_required(view: F) -> F:
    """Let the view run only if a second factor was typed in the last few minutes."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if _recently_verified():
            return view(*args, **kwargs)
        return _ask_for_step_up()

    return wrapped  # type: ignore[return-value]


@bp.route("/login/code", methods=["GET", "POST"])
@public  # half logged in: the password was right, the session says for which account
@limiter.limit(login_rate_limit, methods=["POST"])
def verify_login() -> str | Response | tuple[str, int]:
    pending = _pending()
    user = get_session().get(User, int(pending["user"])) if pending else None
    if pending is None or user is None:
        session.pop(PENDING, None)
        flash("Please log in again.")
        return redirect(url_for("auth.login"), 303)
    if request.method == "GET":
        return render_template("mfa/verify.html", **_factors(user))
    try:
        _check(user)
    except mfa.SecondFactorError as error:
        return _failed_login_code(pending, user, str(error))
    start_session(LoginUser(user))
    session[VERIFIED_AT] = sessions.now()
    return redirect(home_url(), 303)


@bp.get("/account/two-factor")
@logged_in
def settings() -> str:
    db = get_session()
    user = current_user.user
    factors = _factors(user)
    return render_template(
        "mfa/settings.html",
        **factors,
        enrolled=factors["has_app"] or factors["has_keys"],
        required=mfa.required_for(user),
        codes_left=mfa.recovery_codes_left(db, user),
        keys=security_keys.keys_of(db, user),
        keys_offered=_relying_party() is not None,
    )


@bp.post("/account/two-factor/app")
@logged_in
def begin() -> str | Response:
    if mfa.is_enrolled(get_session(), current_user.user) and not _recently_verified():
        return _ask_for_step_up()  # replacing the app needs the old one first
    enrolment = mfa.begin_totp(get_session(), current_user.user, key=_seal_key())
    return _enrol_page(enrolment)


@bp.post("/account/two-factor/app/confirm")
@logged_in
def confirm() -> str | tuple[str, int] | Response:
    try:
        codes = mfa.confirm_totp(
            get_session(),
            current_user.user,
            request.form.get("code", ""),
            key=_seal_key(),
            at=sessions.now(),
        )
    except mfa.SecondFactorError as error:
        flash(str(error))
        return redirect(url_for("mfa.settings"), 303)
    return _first_factor_added(codes, "authenticator app")


@bp.post("/account/two-factor/recovery-codes")
@logged_in
@step_up_required
def renew_recovery_codes() -> str | Response:
    try:
        codes = mfa.new_recovery_codes(get_session(), current_user.user)
    except mfa.SecondFactorError as error:
        flash(str(error))
        return redirect(url_for("mfa.settings"), 303)
    return render_template("mfa/recovery_codes.html", codes=codes, first=False)


@bp.post("/account/two-factor/remove")
@logged_in
@step_up_required
def remove() -> Response:
    try:
        mfa.remove(get_session(), current_user.user)
    except mfa.SecondFactorError as error:
        flash(str(error))
    else:
        flash("Your second factor is removed. You log in with your password alone.")
    return redirect(url_for("mfa.settings"), 303)


@bp.post("/account/two-factor/keys/options")
@logged_in
def key_options() -> Response:
    """The options to register a security key with (JSON); adding one to an account that
    has a second factor needs a fresh one first, as replacing the app does."""
    user = current_user.user
    if mfa.is_enrolled(get_session(), user) and not _recently_verified():
        return problem(401, "Please confirm it is you first.")
    return _options(security_keys.registration_options, user)


@bp.post("/account/two-factor/keys")
@logged_in
def add_key() -> str | Response:
    db, user, rp = get_session(), current_user.user, _relying_party()
    if mfa.is_enrolled(db, user) and not _recently_verified():
        return _ask_for_step_up()
    try:
        if rp is None:
            raise mfa.SecondFactorError(_NO_KEYS)
        codes = security_keys.register(
            db,
            user,
            rp,
            request.form.get("credential", ""),
            request.form.get("name", ""),
            at=sessions.now(),
        )
    except mfa.SecondFactorError as error:
        flash(str(error))
        return redirect(url_for("mfa.settings"), 303)
    if codes is None:
        flash("Your security key is added.")
        return redirect(url_for("mfa.settings"), 303)
    return _first_factor_added(codes, "security key")


@bp.post("/account/two-factor/keys/remove")
@logged_in
@step_up_required
def remove_key() -> Response:
    key_id = request.form.get("key", 0, type=int)
    try:
        if not 0 < key_id <= MAX_SQL_INTEGER:
            raise mfa.SecondFactorError("There is no such security key.")
        name = security_keys.remove(get_session(), current_user.user, key_id)
    except mfa.SecondFactorError as error:
        flash(str(error))
    else:
        flash(f"The security key {name!r} is removed.")
    return redirect(url_for("mfa.settings"), 303)


@bp.post("/login/code/key")
@public  # half logged in, as for verify_login
@limiter.limit(login_rate_limit)
def login_key_options() -> Response:
    """The options to sign the login's second step with a security key (JSON)."""
    pending = _pending()
    user = get_session().get(User, int(pending["user"])) if pending else None
    if user is None:  # 409: the login has to start again, not go through a login page
        return problem(409, "Please log in again.")
    return _options(security_keys.authentication_options, user)


@bp.post("/account/confirm/key")
@logged_in
@limiter.limit(login_rate_limit)
def step_up_key_options() -> Response:
    """The options to confirm it is you with a security key (JSON)."""
    return _options(security_keys.authentication_options, current_user.user)


@bp.route("/account/confirm", methods=["GET", "POST"])
@logged_in
@limiter.limit(login_rate_limit, methods=["POST"])
def step_up() -> str | Response | tuple[str, int]:
    back = _safe_path(request.args.get("next", ""))
    factors = _factors(current_user.user)
    if not (factors["has_app"] or factors["has_keys"]):
        flash("Please set up a second factor first.")
        return redirect(url_for("mfa.settings"), 303)
    if request.method == "GET":
        return render_template("mfa/step_up.html", next=back, **factors)
    try:
        _check(current_user.user)
    except mfa.SecondFactorError as error:
        return render_template("mfa/step_up.html", next=back, errors=[str(error)], **factors), 401
    session[VERIFIED_AT] = sessions.now()
    return redirect(back or home_url(), 303)


def _check(user: User) -> None:
    """Check the second factor the form carries: a security key's answer, or a code."""
    answer = request.form.get("credential", "")
    if not answer:
        code = request.form.get("code", "")
        mfa.verify(get_session(), user, code, key=_seal_key(), at=sessions.now())
        return
    rp = _relying_party()
    if rp is None:
        raise mfa.SecondFactorError(_NO_KEYS)
    security_keys.verify(get_session(), user, rp, answer, at=sessions.now())


def _pending() -> dict[str, int] | None:
    """The half-finished login, if the password was typed less than ``PENDING_MINUTES`` ago."""
    pending = session.get(PENDING)
    if not pending or sessions.now() - int(pending["at"]) > 60 * PENDING_MINUTES:
        return None
    return dict(pending)


def _factors(user: User) -> dict[str, bool]:
    """Which second factors ``user`` has, for the pages to offer the right ones."""
    db = get_session()
    return {"has_app": mfa.has_app(db, user), "has_keys": mfa.has_security_key(db, user)}


def _options(make: Callable[..., str], user: User) -> Response:
    """A ceremony's options from ``make``, as JSON for the page's script."""
    rp = _relying_party()
    if rp is None:
        return problem(404, _NO_KEYS)
    try:
        options = make(get_session(), user, rp, at=sessions.now())
    except mfa.SecondFactorError as error:
        return problem(409, str(error))
    return current_app.response_class(options, mimetype="application/json")


def _relying_party() -> security_keys.RelyingParty | None:
    """Where security keys are used: WEBAUTHN_ORIGIN or PUBLIC_URL; outside production,
    without either, the address the request came to. Production never trusts the Host a
    request names, so without either setting it offers no keys (None)."""
    origin = webauthn_origin(current_app.config)
    if not origin:
        if current_app.config["ENV"] == "production":
            return None
        origin = request.host_url.rstrip("/")
    rp_id = str(current_app.config.get("WEBAUTHN_RP_ID") or "") or urlsplit(origin).hostname
    return security_keys.RelyingParty(id=rp_id or "", origin=origin)


def _failed_login_code(
    pending: dict[str, int], user: User, message: str
) -> str | Response | tuple[str, int]:
    fails = int(pending.get("fails", 0)) + 1
    if fails >= MAX_FAILURES:
        session.pop(PENDING, None)
        flash("Too many wrong codes. Please log in again.")
        return redirect(url_for("auth.login"), 303)
    session[PENDING] = {**pending, "fails": fails}
    return render_template("mfa/verify.html", errors=[message], **_factors(user)), 401


def _first_factor_added(codes: list[str], factor: str) -> str:
    """The account has its first second factor: the enrolment hold ends, the factor just
    used counts for step-up, and the recovery codes are shown (this once)."""
    session.pop(ENROL_REQUIRED, None)
    session[VERIFIED_AT] = sessions.now()
    return render_template("mfa/recovery_codes.html", codes=codes, first=factor)


def _enrol_page(enrolment: mfa.Enrolment) -> str:
    qr = segno.make(enrolment.uri, error="m").svg_inline(scale=5, title="QR code to scan")
    grouped = " ".join(enrolment.secret[i : i + 4] for i in range(0, len(enrolment.secret), 4))
    # segno's own markup of a URI we built (base32 and digits): nothing from a request
    return render_template("mfa/enrol.html", qr=Markup(qr), secret=grouped)  # noqa: S704


def _ask_for_step_up() -> Response:
    message = "Please confirm it is you with your second factor."
    if wants_json():
        return problem(401, message)
    flash(message)
    back = request.full_path.rstrip("?") if request.method == "GET" else _referring_path()
    return redirect(url_for("mfa.step_up", next=back), 303)


def _recently_verified() -> bool:
    verified = session.get(VERIFIED_AT)
    return verified is not None and sessions.now() - int(verified) <= 60 * STEP_UP_MINUTES


def _hold_until_enrolled() -> Response | None:
    if not session.get(ENROL_REQUIRED):
        return None
    endpoint = request.endpoint or ""
    if endpoint.startswith("mfa.") or endpoint in _OPEN_WHILE_ENROLLING:
        return None
    if wants_json():
        return problem(403, "Set up a second factor first.")
    return redirect(url_for("mfa.settings"), 303)


def _seal_key() -> bytes:
    return mfa.seal_key(str(current_app.config["SECRET_KEY"]).encode("utf-8"))


def _referring_path() -> str:
    """The page a refused form was on, if it is one of ours, to send the user back to."""
    referrer = request.referrer or ""
    root = request.host_url
    return _safe_path("/" + referrer[len(root) :]) if referrer.startswith(root) else ""


def _safe_path(path: str) -> str:
    """``path`` if it is a local path (no scheme, host or ``//``), else empty."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return ""
