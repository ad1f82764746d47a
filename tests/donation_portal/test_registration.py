"""Registering: the same answer whether or not the address has an account, the owner told by
e-mail; an unconfirmed account that cannot log in until a link (used once, for 24 hours,
with the password chosen) confirms it and logs the donor in; no address in logs or audit."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from consent.models import AuditEntry
from donation_portal.adapters import migrate
from donation_portal.adapters.db import make_engine
from donation_portal.web import sessions
from donation_portal.workflows import accounts

from .account_helpers import outbox
from .conftest import PASSWORD, Browser

LINK = re.compile(r"http://localhost/register/confirm#([A-Za-z0-9_-]+)")
SENT = "We have sent you an e-mail."
NONCE = re.compile(r'nonce="[^"]*"')
OTHER_PASSWORD = "seven swans swim south"


def _register(browser: Browser, email: str, password: str = PASSWORD) -> TestResponse:
    """Only the registration form (``Browser.register`` confirms as well)."""
    form = {"email": email, "password": password, "password_confirm": password}
    return browser.submit("/register", form)


def _page(response: TestResponse) -> str:
    assert response.status_code == 200
    return NONCE.sub("", response.get_data(as_text=True))


def _token(app: Flask) -> str:
    message = outbox(app)[0]
    assert message.subject == "Confirm your e-mail address"
    found = LINK.search(message.body)
    assert found is not None, message.body
    return found.group(1)


def _confirm(browser: Browser, token: str, password: str = PASSWORD) -> TestResponse:
    return browser.submit("/register/confirm", {"token": token, "password": password})


def _clear(app: Flask) -> None:
    for message in Path(app.config["MAIL_DIR"]).iterdir():
        message.unlink()


def test_the_answer_is_the_same_whether_or_not_the_address_has_an_account(
    app: Flask, browser: Browser, make_user: Any, db_session: Session
) -> None:
    user = make_user("ada@example.org", "donor")
    new = _page(_register(browser, "grace@example.org"))
    existing = _page(_register(browser, "Ada@Example.org", OTHER_PASSWORD))
    assert SENT in new and new == existing
    owner, confirmation = outbox(app)
    assert owner.to == "ada@example.org"
    assert owner.subject == "Someone tried to register with your address"
    assert "http://localhost/password/forgot\r\n" in owner.body and "#" not in owner.body
    assert confirmation.to == "grace@example.org" and "within 24 hours" in confirmation.body
    db_session.refresh(user)
    assert accounts.authenticate(db_session, "ada@example.org", PASSWORD) is not None  # unchanged
    assert browser.client.get("/account").status_code == 302  # nobody logged in


def test_an_unconfirmed_account_cannot_log_in(app: Flask, browser: Browser) -> None:
    _register(browser, "grace@example.org")
    wrong = browser.login("grace@example.org", "not the password")
    assert wrong.status_code == 401
    assert "Wrong e-mail address or password." in wrong.get_data(as_text=True)
    right = browser.login("grace@example.org")  # tells only whoever knows the password
    assert right.status_code == 401
    assert "Please confirm your e-mail address first" in right.get_data(as_text=True)
    assert browser.client.get("/account").status_code == 302


def test_the_link_confirms_once_and_logs_the_donor_in(
    app: Flask, browser: Browser, db_session: Session, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    _register(browser, "Grace@Example.org")
    token = _token(app)
    assert len(token) >= 43  # 256 bits
    user = accounts.find_user(db_session, "grace@example.org")
    assert user is not None and user.email_confirmed_at is None and user.role == "donor"
    assert user.confirmation_hash is not None and token not in user.confirmation_hash

    page = browser.get("/register/confirm")
    assert 'id="token"' in page and "reset-link.js" in page
    wrong = _confirm(browser, token, "not the password")
    assert wrong.status_code == 422
    assert token in wrong.get_data(as_text=True)  # kept in the form for the next try
    done = _confirm(browser, token)
    assert done.status_code == 303 and done.headers["Location"].endswith("/consent")
    consent = browser.get("/consent")
    assert "Your account is ready. Please read the consent below." in consent
    assert "Sign the consent" in consent

    other = Browser(app.test_client())
    again = _confirm(other, token)
    assert again.status_code == 422
    assert "does not work any more" in again.get_data(as_text=True)
    assert other.login("grace@example.org").status_code == 303
    db_session.refresh(user)
    assert user.email_confirmed_at is not None and user.confirmation_hash is None


def test_a_link_expires_after_24_hours(
    app: Flask, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_800_000_000]
    monkeypatch.setattr(sessions, "now", lambda: clock[0])
    _register(browser, "grace@example.org")
    token = _token(app)
    clock[0] += 24 * 3600 + 1
    expired = _confirm(browser, token)
    assert expired.status_code == 422
    assert "does not work any more" in expired.get_data(as_text=True)
    assert browser.login("grace@example.org").status_code == 401


def test_registering_again_sends_a_new_link_and_takes_the_new_password(
    app: Flask, browser: Browser
) -> None:
    first = _page(_register(browser, "grace@example.org"))
    old = _token(app)
    _clear(app)
    second = _page(_register(browser, "grace@example.org", OTHER_PASSWORD))
    assert first == second
    new = _token(app)
    assert "does not work any more" in _confirm(browser, old).get_data(as_text=True)
    assert _confirm(browser, new).status_code == 422  # the first password no longer
    assert _confirm(browser, new, OTHER_PASSWORD).status_code == 303


def test_refused_passwords_are_explained_before_anything_is_sent(
    app: Flask, browser: Browser
) -> None:
    short = _register(browser, "grace@example.org", "short")
    assert short.status_code == 422
    assert "Your password is too short." in short.get_data(as_text=True)
    assert outbox(app) == []


def test_neither_logs_nor_audit_hold_the_address_or_the_token(
    app: Flask, browser: Browser, make_user: Any, db_session: Session, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    ada = make_user("ada@example.org", "donor")
    _register(browser, "ada@example.org")
    _register(browser, "grace@example.org")
    token = _token(app)
    _confirm(browser, token)
    grace = accounts.find_user(db_session, "grace@example.org")
    assert grace is not None
    entries = db_session.scalars(select(AuditEntry)).all()
    actions = {(entry.action, entry.subject_id) for entry in entries}
    assert ("auth.register_existing", str(ada.id)) in actions
    assert ("auth.register", str(grace.id)) in actions
    assert ("auth.email_confirmed", str(grace.id)) in actions
    for secret in ("ada@example.org", "grace@example.org", token):
        assert secret not in caplog.text
        assert all(secret not in f"{entry.actor} {entry.detail}" for entry in entries)


def test_browser_register_confirms_through_the_outbox(browser: Browser) -> None:
    response = browser.register("grace@example.org")
    assert response.status_code == 303 and response.headers["Location"].endswith("/consent")
    assert "Sign the consent" in browser.get("/consent")


def test_accounts_from_before_the_migration_count_as_confirmed(
    empty_database_url: str,
) -> None:
    engine = make_engine(empty_database_url)
    try:
        migrate.upgrade(empty_database_url, "477e87584489-1")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, role, created_at) "
                    "VALUES (1, 'old@example.org', 'x', 'donor', CURRENT_TIMESTAMP)"
                )
            )
        migrate.upgrade(empty_database_url, "477e87584489")
        with engine.connect() as conn:
            confirmed = conn.execute(text("SELECT email_confirmed_at FROM users")).scalar_one()
        assert confirmed is not None
    finally:
        engine.dispose()
