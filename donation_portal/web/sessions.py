"""Login sessions end on the server: after an idle spell, and at an absolute lifetime.

A session is a signed cookie. A browser forgets an expired cookie, but whoever kept a copy
can still send it, so its expiry cannot be left to the cookie: the login time and the time of
the latest request are signed into the session and checked on every request. A session idle
for more than ``SESSION_IDLE_MINUTES`` (``SESSION_IDLE_MINUTES_STAFF`` for stewards and
admins, who can see every donor's consent), or logged in for more than
``SESSION_ABSOLUTE_HOURS`` however active, is logged out and the expiry audited; a page request
is sent to the login page with a message, a JSON request (the API, tus, a page's status poll)
gets a 401 problem instead.

Each login also has a row on the server (``workflows.login_sessions``), named by a random key
in the cookie: its owner sees it listed (browser, start, last request) and can end it from
another browser; a cookie whose row is gone is not logged in. The row's last request is
written at most once a minute.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from flask import Flask, current_app, flash, redirect, request, session, url_for
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response

from donation_portal.adapters.request_session import get_session
from donation_portal.web.errors import problem, wants_json
from donation_portal.workflows import accounts, login_sessions

if TYPE_CHECKING:
    from donation_portal.web.security import LoginUser

LOGIN_AT = "_login_at"  # seconds since the epoch, all three
SEEN_AT = "_seen_at"
TOUCHED_AT = "_touched_at"  # when the server-side row's last request was last written
STAFF_ROLES = ("steward", "admin")
EXPIRED = "Your session has expired, so you were logged out. Please log in again."
_LOGGED_IN = "_user_id"  # where flask-login keeps the login


def init_app(app: Flask) -> None:
    """Check sessions before anything else looks at the request (CSRF, the views)."""
    app.before_request(_enforce_limits)


def now() -> int:
    """Seconds since the epoch: the clock sessions are timed by (tests replace it)."""
    return int(time.time())


def moment_of(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def limits(role: str) -> login_sessions.Limits:
    """How long a session of an account with ``role`` may idle, and last at most."""
    config = current_app.config
    key = "SESSION_IDLE_MINUTES_STAFF" if role in STAFF_ROLES else "SESSION_IDLE_MINUTES"
    return login_sessions.Limits(
        idle=timedelta(minutes=int(config[key])),
        lifetime=timedelta(hours=int(config["SESSION_ABSOLUTE_HOURS"])),
    )


def begin(login: LoginUser) -> None:
    """Begin the server-side session of a login that is being started: ``login`` then
    carries the key its cookie will keep."""
    user = login.user
    device = device_summary(request.user_agent.string)
    moment = moment_of(now())
    key, row = login_sessions.begin(get_session(), user, device, moment, limits(user.role))
    login.key, login.session_id = key, row.id


def start() -> None:
    """Stamp the session of a login that has just begun."""
    session[LOGIN_AT] = session[SEEN_AT] = session[TOUCHED_AT] = now()


def _enforce_limits() -> Response | None:
    if _LOGGED_IN not in session:
        return None
    moment = now()
    reason = _expiry(moment)
    if reason is not None:
        return _expire(reason)
    session[SEEN_AT] = moment
    if moment - session.get(TOUCHED_AT, 0) >= login_sessions.TOUCH_EVERY.total_seconds():
        login_sessions.touch(get_session(), session[_LOGGED_IN], moment_of(moment))
        session[TOUCHED_AT] = moment
    return None


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
        user, login_session_id = current_user.user, current_user.session_id
        accounts.expire_session(get_session(), user, login_session_id, reason)
    logout_user()
    session.clear()
    flash(EXPIRED)  # shown by the next page, also after a script got the 401
    if _wants_json():
        return problem(401, EXPIRED)
    return redirect(url_for("auth.login"), 303)


def _wants_json() -> bool:
    preferred = request.accept_mimetypes.best_match(("text/html", "application/json"))
    return wants_json() or preferred == "application/json"


# (what the User-Agent contains, the name shown): the first match wins, so Edge and Opera,
# which also name Chrome and Safari, come before them
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def device_summary(user_agent: str) -> str:
    """What a person recognises their browser by ("Firefox on Windows"); nothing more of
    the User-Agent is kept."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), "Unknown browser")
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    return f"{browser} on {system}" if system else browser
