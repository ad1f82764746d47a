"""Register (confirming the address), log in, log out, reset a forgotten password (each
audited by its use case in ``workflows.registration``, ``workflows.accounts`` and
``workflows.password_reset``)."""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, logout_user
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from donation_portal.adapters.request_session import get_session
from donation_portal.web import account, mfa
from donation_portal.web.logins import start_session
from donation_portal.web.schemas import (
    LoginSchema,
    RegisterSchema,
    ResetPasswordSchema,
    ResetRequestSchema,
    first_errors,
    load_form,
)
from donation_portal.web.security import LoginUser, limiter, logged_in, login_rate_limit, public
from donation_portal.workflows import accounts, password_reset, registration

bp = Blueprint("auth", __name__)


@bp.route("/register", methods=["GET", "POST"])
@public
@limiter.limit(login_rate_limit, methods=["POST"])
def register() -> str | tuple[str, int]:
    """Register: the answer is the same whether or not the address has an account (or the
    e-mail could be sent); only the owner of the address learns which, by e-mail."""
    if request.method == "GET":
        return render_template("auth/register.html", email="")
    try:
        data = load_form(RegisterSchema(), request.form)
        found = registration.register(get_session(), data["email"], data["password"], account.now())
    except ValidationError as error:
        return _form_error("auth/register.html", first_errors(error))
    except accounts.AccountError as error:
        return _form_error("auth/register.html", [str(error)])
    if found.user is not None and found.token is not None:
        hours = int(registration.VALID_FOR.total_seconds() // 3600)
        body = _CONFIRM_MAIL.replace("{hours}", str(hours))
        subject = "Confirm your e-mail address"
        account.send_link(found.user.email, subject, body, "auth.confirm", found.token)
    elif found.user is not None:
        subject = "Someone tried to register with your address"
        account.send_link(found.user.email, subject, _TAKEN_MAIL, "auth.forgot_password", "")
    return render_template("auth/register_sent.html")


_CONFIRM_MAIL = (
    "Hello,\n\n"
    "someone, hopefully you, registered this address at the image donation portal.\n\n"
    "To confirm it and start, open this link within {hours} hours, and type the password "
    "you chose:\n\n"
    "{link}\n\n"
    "The link works only once. If you did not register, you can ignore this e-mail: "
    "without the link, the account cannot be used.\n"
)
_TAKEN_MAIL = (
    "Hello,\n\n"
    "someone tried to register at the image donation portal with this address, which "
    "already has an account. If it was you, please log in with your password, or choose "
    "a new one here if you forgot it:\n\n"
    "{link}\n\n"
    "If it was not you, you can ignore this e-mail: nothing has changed.\n"
)


@bp.route("/register/confirm", methods=["GET", "POST"])
@public
@limiter.limit(login_rate_limit, methods=["POST"])
def confirm() -> str | Response | tuple[str, int]:
    """Confirm an address with the link sent on registering, and the password chosen then;
    logs the donor in. The link carries its token after ``#`` (as a reset link does, read
    by the same script): browsers never send that part to a server, so no log keeps it."""
    if request.method == "GET":
        return _confirm_page()
    token = request.form.get("token", "")[:64]
    password = request.form.get("password", "")[: accounts.MAX_PASSWORD_LENGTH]
    try:
        user = registration.confirm(get_session(), token, password, account.now())
    except accounts.AccountError as error:
        return _confirm_page([str(error)], 422)
    start_session(LoginUser(user))
    flash("Your account is ready. Please read the consent below.")
    return redirect(url_for("donor.consent"), 303)


def _confirm_page(errors: list[str] | None = None, status: int = 200) -> tuple[str, int]:
    # after a refused password the token stays in the form (the address bar no longer has it)
    token = request.form.get("token", "")[:64] if errors else ""
    return render_template("auth/confirm.html", errors=errors, token=token), status


@bp.route("/login", methods=["GET", "POST"])
@public
@limiter.limit(login_rate_limit, methods=["POST"])
def login() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return render_template("auth/login.html", email="")
    try:
        data = load_form(LoginSchema(), request.form)
    except ValidationError as error:
        return _form_error("auth/login.html", first_errors(error), 400)
    key = str(current_app.config["SECRET_KEY"]).encode("utf-8")
    try:
        user = accounts.log_in(get_session(), data["email"], data["password"], pseudonym_key=key)
    except accounts.AccountError as error:  # the right password, an unconfirmed address
        return _form_error("auth/login.html", [str(error)], 401)
    if user is None:
        return _form_error("auth/login.html", ["Wrong e-mail address or password."], 401)
    return mfa.after_password(LoginUser(user))


@bp.post("/logout")
@logged_in
def logout() -> Response:
    accounts.log_out(get_session(), current_user.user, current_user.session_id)
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"), 303)


@bp.route("/password/forgot", methods=["GET", "POST"])
@public
@limiter.limit(login_rate_limit, methods=["POST"])
def forgot_password() -> str | tuple[str, int]:
    """Ask for a reset link. The answer is the same whether or not the address has an
    account (or the e-mail could be sent): it must not tell anyone which addresses do."""
    if request.method == "GET":
        return render_template("auth/forgot.html", email="")
    try:
        data = load_form(ResetRequestSchema(), request.form)
    except ValidationError as error:
        return _form_error("auth/forgot.html", first_errors(error))
    found = password_reset.request(get_session(), data["email"], account.now())
    if found is not None:
        user, token = found
        minutes = int(password_reset.VALID_FOR.total_seconds() // 60)
        body = _RESET_MAIL.replace("{minutes}", str(minutes))
        account.send_link(user.email, "Reset your password", body, "auth.reset_password", token)
    return render_template("auth/forgot_sent.html")


_RESET_MAIL = (
    "Hello,\n\n"
    "someone, hopefully you, asked to reset the password of your account at the image "
    "donation portal.\n\n"
    "To choose a new password, open this link within {minutes} minutes:\n\n"
    "{link}\n\n"
    "The link works only once. If you did not ask for it, you can ignore this e-mail: "
    "your password stays as it is.\n"
)


@bp.route("/password/reset", methods=["GET", "POST"])
@public
@limiter.limit(login_rate_limit, methods=["POST"])
def reset_password() -> str | Response | tuple[str, int]:
    """Choose a new password. The link carries its token after ``#``, which browsers never
    send to a server (so no access log keeps it): a script puts it into the form."""
    if request.method == "GET":
        return _reset_page()
    try:
        data = load_form(ResetPasswordSchema(), request.form)
        password_reset.complete(get_session(), data["token"], data["password"], account.now())
    except ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {}
        if "token" in messages:
            return _reset_page([password_reset.INVALID_LINK], 422)
        return _reset_page(first_errors(error), 422)
    except accounts.AccountError as error:
        return _reset_page([str(error)], 422)
    flash("Your password has been changed. Please log in with your new password.")
    return redirect(url_for("auth.login"), 303)


def _reset_page(errors: list[str] | None = None, status: int = 200) -> tuple[str, int]:
    # after a refused password the token stays in the form (the address bar no longer has it)
    token = request.form.get("token", "")[:64] if errors else ""
    return render_template("auth/reset.html", errors=errors, token=token), status


def _form_error(template: str, errors: list[str], status: int = 422) -> tuple[str, int]:
    email = request.form.get("email", "")[:254]
    return render_template(template, errors=errors, email=email), status
