"""Where a login ends: a fresh session for the user, and the page their role starts on.

Shared by the password step (``auth``) and the second-factor step (``mfa``), which both may
be the last step of a login.
"""

from __future__ import annotations

from flask import session, url_for
from flask_login import current_user, login_user

from donation_portal.web import sessions
from donation_portal.web.security import LoginUser

HOME_BY_ROLE = {
    "donor": "donor.home",
    "steward": "steward.consents",
    "admin": "steward.consents",
    "researcher": "researcher.home",
}


def home_url() -> str:
    return url_for(HOME_BY_ROLE.get(current_user.role, "donor.home"))


def start_session(user: LoginUser) -> None:
    """A fresh session at login, so nothing from before it (fixation) carries over."""
    session.clear()
    sessions.begin(user)  # the server-side row, which the cookie names
    login_user(user)
    session.permanent = True
    sessions.start()
