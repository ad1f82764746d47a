"""Register, log in, log out (each audited by its use case in ``workflows.accounts``)."""

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
from flask_login import current_user, login_required, login_user, logout_user
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from donation_portal.adapters.request_session import get_session
from donation_portal.web import sessions
from donation_portal.web.schemas import LoginSchema, RegisterSchema, first_errors, load_form
from donation_portal.web.security import LoginUser, limiter, login_rate_limit
from donation_portal.workflows import accounts

bp = Blueprint("auth", __name__)

HOME_BY_ROLE = {
    "donor": "donor.home",
    "steward": "steward.consents",
    "admin": "steward.consents",
    "researcher": "researcher.home",
}


def home_url() -> str:
    return url_for(HOME_BY_ROLE.get(current_user.role, "donor.home"))


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(login_rate_limit, methods=["POST"])
def register() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return render_template("auth/register.html", email="")
    try:
        data = load_form(RegisterSchema(), request.form)
        user = accounts.register(get_session(), data["email"], data["password"])
    except ValidationError as error:
        return _form_error("auth/register.html", first_errors(error))
    except accounts.AccountError as error:
        return _form_error("auth/register.html", [str(error)])
    _start_session(LoginUser(user))
    flash("Your account is ready. Please read the consent below.")
    return redirect(url_for("donor.consent"), 303)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_rate_limit, methods=["POST"])
def login() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return render_template("auth/login.html", email="")
    try:
        data = load_form(LoginSchema(), request.form)
    except ValidationError as error:
        return _form_error("auth/login.html", first_errors(error), 400)
    key = str(current_app.config["SECRET_KEY"]).encode("utf-8")
    user = accounts.log_in(get_session(), data["email"], data["password"], pseudonym_key=key)
    if user is None:
        return _form_error("auth/login.html", ["Wrong e-mail address or password."], 401)
    _start_session(LoginUser(user))
    return redirect(home_url(), 303)


@bp.post("/logout")
@login_required
def logout() -> Response:
    accounts.log_out(get_session(), current_user.user)
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"), 303)


def _start_session(user: LoginUser) -> None:
    """A fresh session at login, so nothing from before it (fixation) carries over."""
    session.clear()
    login_user(user)
    session.permanent = True
    sessions.start()


def _form_error(template: str, errors: list[str], status: int = 422) -> tuple[str, int]:
    email = request.form.get("email", "")[:254]
    return render_template(template, errors=errors, email=email), status
