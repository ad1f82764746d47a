"""A user's own account (password, login sessions), admins' list of accounts, and e-mail.

Each change is audited by its use case (``workflows.accounts``, ``workflows.login_sessions``).
E-mail goes through the mailer ``init_app`` builds from the settings (``adapters.mail``);
without SMTP, outside production, messages land in a folder that ``/dev/mail`` lists.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
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
from werkzeug.wrappers import Response

from donation_portal.adapters import mail
from donation_portal.adapters.request_session import get_session
from donation_portal.web import sessions
from donation_portal.web.limits import MAX_SQL_INTEGER
from donation_portal.web.mfa import step_up_required
from donation_portal.web.schemas import ChangePasswordSchema, first_errors, load_form
from donation_portal.web.security import limiter, logged_in, login_rate_limit, public, role_required
from donation_portal.workflows import accounts, login_sessions

bp = Blueprint("account", __name__)
MAILER = "portal_mailer"
log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    app.extensions[MAILER] = mail.mailer_from_settings(app.config)
    app.jinja_env.globals["password_rules"] = {
        "min": accounts.MIN_PASSWORD_LENGTH,
        "recommended": accounts.RECOMMENDED_PASSWORD_LENGTH,
        "max": accounts.MAX_PASSWORD_LENGTH,
    }
    app.register_blueprint(bp)


def now() -> datetime:
    """The sessions' clock, as a datetime (tests move it)."""
    return sessions.moment_of(sessions.now())


def _external_url(endpoint: str, fragment: str) -> str:
    """A link for an e-mail: under PUBLIC_URL, never the Host a request claimed (whoever
    sends the request could name their own server, and receive the link). Without
    PUBLIC_URL, outside production, the address the request came to."""
    base = str(current_app.config["PUBLIC_URL"]).rstrip("/")
    if not base:
        if current_app.config["ENV"] == "production":
            raise mail.MailError("no PUBLIC_URL is configured for links in e-mails")
        base = request.host_url.rstrip("/")
    return f"{base}{url_for(endpoint)}" + (f"#{fragment}" if fragment else "")


def send_link(to: str, subject: str, body: str, endpoint: str, token: str) -> bool:
    """E-mail ``body`` to ``to``, its ``{link}`` replaced by a link to ``endpoint`` that
    carries ``token`` (if any) after ``#`` (browsers never send that part to a server, so no
    access log keeps it; the page's script reads it). False (logged, without the message, the
    address or the link) if it could not be sent: the caller's answer must not depend on
    it where that would tell whether an account exists."""
    try:
        link = _external_url(endpoint, token)
        current_app.extensions[MAILER].send(mail.Message(to, subject, body.replace("{link}", link)))
    except mail.MailError as error:
        log.error("an e-mail could not be sent: %s", error)
        return False
    return True


@bp.get("/account")
@logged_in
def home() -> str:
    return _home_page()[0]


def _home_page(errors: list[str] | None = None, status: int = 200) -> tuple[str, int]:
    user = current_user.user
    rows = login_sessions.of_user(get_session(), user, now(), sessions.limits(user.role))
    page = render_template(
        "account/home.html",
        errors=errors,
        login_sessions=rows,
        current_session_id=current_user.session_id,
    )
    return page, status


@bp.post("/account/password")
@logged_in
@limiter.limit(login_rate_limit)
def change_password() -> Response | tuple[str, int]:
    try:
        data = load_form(ChangePasswordSchema(), request.form)
        accounts.change_password(
            get_session(),
            current_user.user,
            data["current_password"],
            data["password"],
            current_user.session_id,
            now(),
        )
    except ValidationError as error:
        return _home_page(first_errors(error), 422)
    except accounts.AccountError as error:
        return _home_page([str(error)], 422)
    flash(
        "Your password has been changed. You were logged out everywhere else, "
        "and your API tokens (if you had any) no longer work."
    )
    return redirect(url_for("account.home"), 303)


@bp.post("/account/sessions/<int:session_id>/end")
@logged_in
def end_session(session_id: int) -> Response:
    if session_id == current_user.session_id:
        abort(400)  # this browser logs out with the "Log out" button
    if login_sessions.end(get_session(), current_user.user, session_id, "ended_by_owner"):
        flash("That login has been ended.")
    else:
        flash("That login had already ended.")
    return redirect(url_for("account.home"), 303)


@bp.post("/account/sessions/end-others")
@logged_in
def end_other_sessions() -> Response:
    ended = login_sessions.end_others(get_session(), current_user.user, current_user.session_id)
    flash(f"You were logged out on {ended} other device(s)." if ended else "No other logins.")
    return redirect(url_for("account.home"), 303)


@bp.get("/admin/users")
@role_required("admin")
def users() -> str:
    page = request.args.get("page", 1, type=int)
    rows, page, pages = accounts.users_page(get_session(), max(1, min(page, MAX_SQL_INTEGER)))
    return render_template("account/users.html", users=rows, page=page, pages=pages)


@bp.post("/admin/users/<int:user_id>/disable")
@role_required("admin")
def disable(user_id: int) -> Response:
    return _set_disabled(user_id, True)


@bp.post("/admin/users/<int:user_id>/enable")
@role_required("admin")
@step_up_required
def enable(user_id: int) -> Response:
    return _set_disabled(user_id, False)


def _set_disabled(user_id: int, disabled: bool) -> Response:
    try:
        user = accounts.set_disabled(get_session(), current_user.user, user_id, disabled, now())
    except accounts.AccountError as error:
        flash(str(error))
    else:
        state = "disabled: it can no longer log in" if disabled else "enabled again"
        flash(f"The account {user.email} is {state}.")
    page = request.form.get("page", 1, type=int)
    return redirect(url_for("account.users", page=max(1, min(page, MAX_SQL_INTEGER))), 303)


@bp.get("/dev/mail")
@public
def dev_mail() -> str:
    """The e-mails written to the folder instead of being sent: development only."""
    mailer = current_app.extensions[MAILER]
    if current_app.config["ENV"] == "production" or not isinstance(mailer, mail.FolderMailer):
        abort(404)
    messages = mail.read_folder(Path(mailer.directory))
    return render_template("account/dev_mail.html", messages=messages)
