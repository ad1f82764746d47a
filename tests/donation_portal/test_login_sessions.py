"""A user's own logins: listed (device, start, last request), ended one by one or all but
this one; changing the password ends the others and revokes the API tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.models import AuditEntry
from donation_portal.adapters.models import LoginSession
from donation_portal.web import sessions
from donation_portal.workflows import accounts, tokens

from .account_helpers import FIREFOX_ON_WINDOWS, SAFARI_ON_IPHONE, log_in_directly
from .conftest import PASSWORD, Browser

NEW_PASSWORD = "blue kettle sings at dawn"


def _logged_in(app: Flask, email: str, user_agent: str) -> Browser:
    browser = Browser(app.test_client())
    browser.client.environ_base["HTTP_USER_AGENT"] = user_agent
    assert browser.login(email).status_code == 303
    return browser


def _is_logged_in(browser: Browser) -> bool:
    return browser.client.get("/account").status_code == 200


def _actions(db_session: Session, user_id: int) -> list[tuple[str, Any]]:
    query = select(AuditEntry.action, AuditEntry.detail).where(
        AuditEntry.subject_type == "user", AuditEntry.subject_id == str(user_id)
    )
    return [tuple(row) for row in db_session.execute(query.order_by(AuditEntry.id))]


@pytest.mark.parametrize(
    ("user_agent", "summary"),
    [
        (FIREFOX_ON_WINDOWS, "Firefox on Windows"),
        (SAFARI_ON_IPHONE, "Safari on iPhone"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
            "Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
            "Edge on macOS",
        ),
        ("curl/8.5.0", "Unknown browser"),
    ],
)
def test_a_device_is_summarised_by_browser_and_system_only(user_agent: str, summary: str) -> None:
    assert sessions.device_summary(user_agent) == summary


def test_a_user_sees_their_logins_and_ends_one(
    app: Flask, make_user: Any, db_session: Session, published: None
) -> None:
    user = make_user("ada@example.org", "donor")
    laptop = _logged_in(app, "ada@example.org", FIREFOX_ON_WINDOWS)
    phone = _logged_in(app, "ada@example.org", SAFARI_ON_IPHONE)
    page = laptop.get("/account")
    assert "Firefox on Windows" in page and "Safari on iPhone" in page
    assert page.count("Log out there") == 1  # not for this device
    assert "This device" in page
    phone_row = next(s for s in _sessions(db_session, user.id) if s.device == "Safari on iPhone")
    ended = laptop.submit("/account", {}, action=f"/account/sessions/{phone_row.id}/end")
    assert ended.status_code == 303
    assert not _is_logged_in(phone)
    assert _is_logged_in(laptop)
    assert "Safari on iPhone" not in laptop.get("/account")
    assert ("auth.session_ended", {"reason": "ended_by_owner", "sessions": 1}) in _actions(
        db_session, user.id
    )


def _sessions(db_session: Session, user_id: int) -> list[Any]:
    db_session.expire_all()
    return list(db_session.scalars(select(LoginSession).where(LoginSession.user_id == user_id)))


def test_a_user_cannot_end_someone_else_s_login(
    app: Flask, make_user: Any, db_session: Session, published: None
) -> None:
    make_user("ada@example.org", "donor")
    bob = make_user("bob@example.org", "donor")
    ada = _logged_in(app, "ada@example.org", FIREFOX_ON_WINDOWS)
    bob_browser = _logged_in(app, "bob@example.org", FIREFOX_ON_WINDOWS)
    (bob_row,) = _sessions(db_session, bob.id)
    reply = ada.submit("/account", {}, action=f"/account/sessions/{bob_row.id}/end")
    assert reply.status_code == 303
    assert _is_logged_in(bob_browser)


def test_logging_out_ends_this_login_only_and_ending_all_others_keeps_this_one(
    app: Flask, make_user: Any, published: None
) -> None:
    make_user("ada@example.org", "donor")
    first = _logged_in(app, "ada@example.org", FIREFOX_ON_WINDOWS)
    second = _logged_in(app, "ada@example.org", SAFARI_ON_IPHONE)
    third = _logged_in(app, "ada@example.org", SAFARI_ON_IPHONE)
    assert third.logout().status_code == 303
    assert not _is_logged_in(third)
    assert _is_logged_in(first) and _is_logged_in(second)
    reply = first.submit("/account", {}, action="/account/sessions/end-others")
    assert reply.status_code == 303
    assert "logged out on 1 other device" in first.get("/account")
    assert not _is_logged_in(second)
    assert _is_logged_in(first)


def test_the_last_request_is_recorded_at_most_once_a_minute(
    app: Flask,
    make_user: Any,
    db_session: Session,
    published: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1_800_000_000]
    monkeypatch.setattr(sessions, "now", lambda: clock[0])
    user = make_user("ada@example.org", "donor")
    browser = _logged_in(app, "ada@example.org", FIREFOX_ON_WINDOWS)
    (row,) = _sessions(db_session, user.id)
    started = row.last_seen_at
    clock[0] += 30
    browser.get("/account")
    assert _sessions(db_session, user.id)[0].last_seen_at == started
    clock[0] += 31
    browser.get("/account")
    seen = _sessions(db_session, user.id)[0].last_seen_at
    assert seen.replace(tzinfo=UTC) == datetime.fromtimestamp(clock[0], UTC)


def test_changing_the_password_ends_the_other_logins_and_the_api_tokens(
    app: Flask, make_user: Any, db_session: Session
) -> None:
    user = make_user("res@example.org", "researcher")
    here = log_in_directly(app, user, FIREFOX_ON_WINDOWS)
    elsewhere = log_in_directly(app, user, SAFARI_ON_IPHONE)
    now = datetime.now(UTC)
    token, _ = tokens.issue(db_session, user, "script", [tokens.READ_RELEASES], 30, now)
    wrong = here.submit(
        "/account",
        {"current_password": "not it", "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
        action="/account/password",
    )
    assert wrong.status_code == 422
    assert "Your current password is not correct." in wrong.get_data(as_text=True)
    weak = here.submit(
        "/account",
        {
            "current_password": PASSWORD,
            "password": "Password123!",
            "password_confirm": "Password123!",
        },
        action="/account/password",
    )
    assert weak.status_code == 422
    assert "too easy to guess" in weak.get_data(as_text=True)
    assert _is_logged_in(elsewhere)
    changed = here.submit(
        "/account",
        {"current_password": PASSWORD, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
        action="/account/password",
    )
    assert changed.status_code == 303
    assert "Your password has been changed" in here.get("/account")
    assert _is_logged_in(here)
    assert not _is_logged_in(elsewhere)
    with pytest.raises(tokens.TokenRefused, match="revoked"):
        tokens.authenticate(db_session, token, now)
    db_session.expire_all()
    assert accounts.authenticate(db_session, "res@example.org", NEW_PASSWORD) is not None
    assert accounts.authenticate(db_session, "res@example.org", PASSWORD) is None
    assert ("auth.password_changed", {"sessions_ended": 1, "tokens_revoked": 1}) in _actions(
        db_session, user.id
    )
