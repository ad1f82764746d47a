"""Login sessions end on the server: after an idle spell, and at an absolute lifetime.

A session is a signed cookie. A browser forgets an expired cookie, but whoever kept a copy
can still send it, so its expiry cannot be left to the cookie: the login time and the time of
the latest request are signed into the session and checked on every request. A session idle
for more than ``SESSION_IDLE_MINUTES`` (``SESSION_IDLE_MINUTES_STAFF`` for stewards and
admins, who can see every donor's consent), or logged in for more than
``SESSION_ABSOLUTE_HOURS`` however active, is logged out and the expiry audited; a page request
is sent to the login page with a message, a JSON request (the API, tus, a page's status poll)
gets a 401 problem instead.
"""

from __future__ import annotations

import time

from flask import Flask, current_app, flash, redirect, request, session, url_for
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response

from donation_portal.adapters.request_session import get_session
from donation_portal.web.errors import problem, wants_json
from donation_portal.workflows import accounts

LOGIN_AT = "_login_at"  # seconds since the epoch, both
SEEN_AT = "_seen_at"
STAFF_ROLES = ("steward", "admin")
EXPIRED = "Your session has expired, so you were logged out. Please log in again."
_LOGGED_IN = "_user_id"  # where flask-login keeps the login


def init_app(app: Flask) -> None:
    """Check sessions before anything else looks at the request (CSRF, the views)."""
    app.before_request(_enforce_limits)


def now() -> int:
    """Seconds since the epoch: the clock sessions are timed by (tests replace it)."""
    return int(time.time())


def start() -> None:
    """Stamp the session of a login that has just begun."""
    session[LOGIN_AT] = session[SEEN_AT] = now()


def _enforce_limits() -> Response | None:
    if _LOGGED_IN not in session:
        return None
    moment = now()
    reason = _expiry(moment)
    if reason is None:
        session[SEEN_AT] = moment
        return None
    return _expire(reason)


def _expiry(moment: int) -> str | None:
    """Why the session is over (``absolute`` or ``idle``), or None. A session without stamps
    (issued before they existed) counts as logged in and last seen at the epoch."""
    config = current_app.config
    if moment - session.get(LOGIN_AT, 0) > 3600 * int(config["SESSION_ABSOLUTE_HOURS"]):
        return "absolute"
    idle = moment - session.get(SEEN_AT, 0)
    staff_limit = 60 * int(config["SESSION_IDLE_MINUTES_STAFF"])
    limit = 60 * int(config["SESSION_IDLE_MINUTES"])
    if idle <= min(staff_limit, limit):
        return None  # decided without loading the user: no database query on most requests
    staff = current_user.is_authenticated and current_user.role in STAFF_ROLES
    return "idle" if idle > (staff_limit if staff else limit) else None


def _expire(reason: str) -> Response:
    if current_user.is_authenticated:  # not if logging out elsewhere already revoked it
        accounts.expire_session(get_session(), current_user.user, reason)
    logout_user()
    session.clear()
    flash(EXPIRED)  # shown by the next page, also after a script got the 401
    if _wants_json():
        return problem(401, EXPIRED)
    return redirect(url_for("auth.login"), 303)


def _wants_json() -> bool:
    preferred = request.accept_mimetypes.best_match(("text/html", "application/json"))
    return wants_json() or preferred == "application/json"
