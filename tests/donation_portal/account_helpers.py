"""Helpers of the account tests: logging a user in directly, reading the e-mail outbox."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from donation_portal.adapters import mail
from donation_portal.adapters.models import User
from donation_portal.web import mfa, sessions
from donation_portal.web.security import LoginUser

from .conftest import Browser

FIREFOX_ON_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
)
SAFARI_ON_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


def log_in_directly(app: Flask, user: User, user_agent: str = FIREFOX_ON_WINDOWS) -> Browser:
    """A browser logged in as ``user``: its login session begun as the login page begins
    one, without the page's other steps (the second factor counts as typed just now)."""
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = user_agent
    with app.test_request_context(headers={"User-Agent": user_agent}):
        login = LoginUser(user)
        sessions.begin(login)
    with client.session_transaction() as session:
        session["_user_id"] = login.key
        session["_fresh"] = True
        session.permanent = True
        stamp = sessions.now()
        session[sessions.LOGIN_AT] = session[sessions.SEEN_AT] = stamp
        session[sessions.TOUCHED_AT] = stamp
        session[mfa.VERIFIED_AT] = stamp
    return Browser(client)


def outbox(app: Flask) -> list[mail.StoredMessage]:
    """The e-mails the app wrote to its folder (no SMTP in tests), newest first."""
    return mail.read_folder(Path(app.config["MAIL_DIR"]))
