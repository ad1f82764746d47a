"""Resetting a forgotten password by e-mail: the same answer for any address, a link that
works once for 30 minutes and never appears in a log, every login ended, nobody logged in.
And the mail adapter: SMTP (against a local server the test starts), or a folder."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consent.models import AuditEntry
from donation_portal.adapters import mail
from donation_portal.adapters.models import PasswordReset
from donation_portal.web import sessions
from donation_portal.workflows import accounts

from .account_helpers import outbox
from .conftest import PASSWORD, Browser

NEW_PASSWORD = "seven swans swim south"
LINK = re.compile(r"(http://localhost/password/reset)#([A-Za-z0-9_-]+)")
SAME_ANSWER = "If an account exists for this address, we have just sent it a link"


def _ask(browser: Browser, email: str) -> str:
    reply = browser.submit("/password/forgot", {"email": email})
    assert reply.status_code == 200
    return reply.get_data(as_text=True)


def _token(app: Flask) -> str:
    (message,) = outbox(app)
    found = LINK.search(message.body)
    assert found is not None, message.body
    return found.group(2)


def _reset(browser: Browser, token: str, password: str = NEW_PASSWORD) -> Any:
    form = {"token": token, "password": password, "password_confirm": password}
    return browser.submit("/password/reset", form)


def test_the_answer_is_the_same_whether_or_not_the_address_has_an_account(
    app: Flask, browser: Browser, make_user: Any
) -> None:
    make_user("ada@example.org", "donor")
    unknown = _ask(browser, "nobody@example.org")
    assert outbox(app) == []
    known = _ask(browser, "Ada@Example.org")
    assert SAME_ANSWER in known and known == unknown
    (message,) = outbox(app)
    assert message.to == "ada@example.org" and message.subject == "Reset your password"
    assert "within 30 minutes" in message.body


def test_a_reset_ends_every_login_and_logs_nobody_in(
    app: Flask, browser: Browser, make_user: Any, db_session: Session, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    user = make_user("ada@example.org", "donor")
    elsewhere = Browser(app.test_client())
    assert elsewhere.login("ada@example.org").status_code == 303
    _ask(browser, "ada@example.org")
    token = _token(app)
    assert len(token) >= 43  # 256 bits
    stored = db_session.scalars(select(PasswordReset.token_hash)).one()
    assert token not in stored  # a digest only

    page = browser.get("/password/reset")
    assert "reset-link.js" in page and token not in page
    weak = _reset(browser, token, "Password123!")
    assert weak.status_code == 422
    assert token in weak.get_data(as_text=True)  # kept in the form for the next try
    done = _reset(browser, token)
    assert done.status_code == 303 and done.headers["Location"].endswith("/login")
    assert "Please log in with your new password" in browser.get("/login")
    assert browser.client.get("/account").status_code == 302  # not logged in by the reset
    assert elsewhere.client.get("/account").status_code == 302  # logged out everywhere
    again = _reset(browser, token, "another fine password here")
    assert again.status_code == 422
    assert "does not work any more" in again.get_data(as_text=True)
    assert browser.login("ada@example.org").status_code == 401
    assert browser.login("ada@example.org", NEW_PASSWORD).status_code == 303

    assert token not in caplog.text
    actions = db_session.scalars(
        select(AuditEntry.action).where(AuditEntry.subject_id == str(user.id))
    ).all()
    assert "auth.password_reset_requested" in actions and "auth.password_reset" in actions
    assert all(token not in str(detail) for detail in db_session.scalars(select(AuditEntry.detail)))


def test_a_link_expires_after_30_minutes_and_a_newer_one_replaces_it(
    app: Flask, browser: Browser, make_user: Any, db_session: Session, monkeypatch: Any
) -> None:
    clock = [1_800_000_000]
    monkeypatch.setattr(sessions, "now", lambda: clock[0])
    make_user("ada@example.org", "donor")
    _ask(browser, "ada@example.org")
    first = _token(app)
    for message in Path(app.config["MAIL_DIR"]).iterdir():
        message.unlink()
    _ask(browser, "ada@example.org")
    second = _token(app)
    assert "does not work any more" in _reset(browser, first).get_data(as_text=True)
    assert db_session.scalar(select(func.count()).select_from(PasswordReset)) == 1
    clock[0] += 30 * 60 + 1
    expired = _reset(browser, second)
    assert expired.status_code == 422
    assert "does not work any more" in expired.get_data(as_text=True)
    assert browser.login("ada@example.org", PASSWORD).status_code == 303  # unchanged


def test_a_disabled_account_gets_no_link(
    app: Flask, browser: Browser, make_user: Any, db_session: Session
) -> None:
    admin = make_user("admin@example.org", "admin")
    user = make_user("ada@example.org", "donor")
    accounts.set_disabled(db_session, admin, user.id, True, datetime.now(UTC))
    assert SAME_ANSWER in _ask(browser, "ada@example.org")
    assert outbox(app) == []


def test_a_made_up_token_is_refused(browser: Browser) -> None:
    for token in ("x" * 43, "short", ""):
        reply = _reset(browser, token)
        assert reply.status_code == 422
        assert "does not work any more" in reply.get_data(as_text=True)


def test_the_development_outbox_page_lists_the_messages(
    app: Flask, browser: Browser, make_user: Any, production_app: Flask
) -> None:
    make_user("ada@example.org", "donor")
    assert "No e-mails yet." in browser.get("/dev/mail")
    _ask(browser, "ada@example.org")
    page = browser.get("/dev/mail")
    assert "Reset your password" in page and "ada@example.org" in page
    assert production_app.test_client().get("/dev/mail").status_code == 404


class _Recorder(Sink):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Recorder, int]]:
    recorder = _Recorder()
    with socket.socket() as probe:  # a free port (the controller's start-up test needs one)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


def _settings(**values: Any) -> dict[str, Any]:
    return {
        "ENV": "development",
        "SMTP_HOST": "",
        "SMTP_PORT": 587,
        "SMTP_USER": "",
        "SMTP_PASSWORD": "",
        "SMTP_STARTTLS": True,
        "MAIL_FROM": "portal@example.org",
        "MAIL_DIR": "/nonexistent",
        **values,
    }


def test_the_smtp_mailer_sends_through_the_configured_server(
    smtp_server: tuple[_Recorder, int],
) -> None:
    recorder, port = smtp_server
    mailer = mail.mailer_from_settings(
        _settings(SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_STARTTLS=False)
    )
    assert isinstance(mailer, mail.SmtpMailer)
    mailer.send(mail.Message("ada@example.org", "Hello", "Grüße aus dem Portal"))
    (received,) = recorder.received
    assert b"From: portal@example.org" in received and b"To: ada@example.org" in received


def test_an_smtp_failure_is_a_mail_error_without_the_message(smtp_server: Any) -> None:
    _, port = smtp_server
    # the local server offers no STARTTLS: the mailer must not send in the clear instead
    mailer = mail.mailer_from_settings(_settings(SMTP_HOST="127.0.0.1", SMTP_PORT=port))
    with pytest.raises(mail.MailError) as refused:
        mailer.send(mail.Message("ada@example.org", "Hello", "secret link"))
    assert "ada@example.org" not in str(refused.value) and "secret" not in str(refused.value)


def test_production_without_smtp_sends_nothing_and_writes_nothing(tmp_path: Path) -> None:
    mailer = mail.mailer_from_settings(_settings(ENV="production", MAIL_DIR=str(tmp_path)))
    with pytest.raises(mail.MailError):
        mailer.send(mail.Message("ada@example.org", "Hello", "link"))
    assert list(tmp_path.iterdir()) == []
