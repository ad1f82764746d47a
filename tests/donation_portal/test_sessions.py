"""Login sessions end on the server after an idle spell (sooner for staff) and at an absolute
lifetime, whatever the cookie says; production names the cookie ``__Host-`` and sends it over
HTTPS only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consent.models import AuditEntry
from donation_portal import create_app
from donation_portal.adapters.settings import ConfigError, load_settings
from donation_portal.web import sessions
from donation_portal.workflows import accounts

from .conftest import Browser

EXPIRED = "Your session has expired"


@dataclass
class Clock:
    """The sessions' clock, moved by hand."""

    seconds: int = 1_800_000_000

    def __call__(self) -> int:
        return self.seconds

    def advance(self, *, minutes: int = 0, hours: int = 0) -> None:
        self.seconds += 60 * minutes + 3600 * hours


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(sessions, "now", fake)
    return fake


def logged_in(app: Flask, make_user: Any, email: str, role: str) -> Browser:
    make_user(email, role)
    browser = Browser(app.test_client())
    assert browser.login(email).status_code == 303
    return browser


def assert_sent_to_login(browser: Browser, path: str) -> None:
    response = browser.client.get(path)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/login")
    assert EXPIRED in browser.get("/login")
    after = browser.client.get(path)  # logged out: an ordinary redirect to log in, no message
    assert after.status_code == 302 and "/login" in after.headers["Location"]


def expiries(db_session: Session, email: str) -> list[dict[str, Any]]:
    user = accounts.find_user(db_session, email)
    assert user is not None
    query = select(AuditEntry.detail).where(
        AuditEntry.action == "auth.session_expired", AuditEntry.actor == f"user:{user.id}"
    )
    return list(db_session.scalars(query))


def test_an_idle_session_ends_on_the_server(
    app: Flask, make_user: Any, clock: Clock, db_session: Session, published: None
) -> None:
    donor = logged_in(app, make_user, "idle@example.org", "donor")
    for _ in range(3):  # each request restarts the idle time
        clock.advance(minutes=29)
        assert donor.client.get("/consent").status_code == 200
    kept = donor.client.get_cookie("session").value
    clock.advance(minutes=31)
    assert_sent_to_login(donor, "/consent")
    assert expiries(db_session, "idle@example.org") == [{"reason": "idle"}]
    donor.client.set_cookie("session", kept)  # a copy kept from before: its times are signed
    assert donor.client.get("/consent").status_code == 303


def test_stewards_and_admins_idle_out_after_15_minutes(
    app: Flask, make_user: Any, clock: Clock, db_session: Session, published: None
) -> None:
    steward = logged_in(app, make_user, "steward@example.org", "steward")
    admin = logged_in(app, make_user, "admin@example.org", "admin")
    donor = logged_in(app, make_user, "donor@example.org", "donor")
    clock.advance(minutes=14)
    assert steward.client.get("/steward/").status_code == 200
    assert admin.client.get("/steward/").status_code == 200
    clock.advance(minutes=16)
    assert_sent_to_login(steward, "/steward/")
    assert_sent_to_login(admin, "/steward/")
    assert donor.client.get("/consent").status_code == 200  # idle 30 minutes: not yet
    assert expiries(db_session, "steward@example.org") == [{"reason": "idle"}]


def test_a_session_ends_after_12_hours_however_active(
    app: Flask, make_user: Any, clock: Clock, db_session: Session, published: None
) -> None:
    donor = logged_in(app, make_user, "busy@example.org", "donor")
    for _ in range(24):  # a request every 29 minutes: 11 h 36 min
        clock.advance(minutes=29)
        assert donor.client.get("/consent").status_code == 200
    clock.advance(minutes=29)
    assert_sent_to_login(donor, "/consent")
    assert expiries(db_session, "busy@example.org") == [{"reason": "absolute"}]


def test_a_session_without_the_times_is_ended(
    app: Flask, make_user: Any, clock: Clock, published: None
) -> None:
    """A cookie issued before sessions were stamped must not live on unchecked."""
    donor = logged_in(app, make_user, "old@example.org", "donor")
    with donor.client.session_transaction() as session:
        del session[sessions.LOGIN_AT], session[sessions.SEEN_AT]
    assert_sent_to_login(donor, "/consent")


@pytest.mark.parametrize(
    ("role", "method", "path", "headers"),
    [
        ("donor", "POST", "/uploads/", {"Tus-Resumable": "1.0.0", "Upload-Length": "10"}),
        ("donor", "GET", "/donations/x/status.json", {"Accept": "application/json"}),
    ],
)
def test_json_requests_of_an_expired_session_get_401(
    app: Flask,
    make_user: Any,
    clock: Clock,
    published: None,
    role: str,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    user = logged_in(app, make_user, f"{role}@example.org", role)
    clock.advance(minutes=31)
    response = user.client.open(path, method=method, headers=headers)
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert EXPIRED in response.get_json()["detail"]


def test_production_sends_a_host_only_secure_cookie(
    production_app: Flask, make_user: Any, published: None
) -> None:
    make_user("prod@example.org", "donor")
    client = production_app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    response = Browser(client).login("prod@example.org")
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-session=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite", "expires"} <= attributes
    assert "domain" not in attributes
    assert "; Path=/;" in cookie and "SameSite=Lax" in cookie
    expires = client.get_cookie("__Host-session", domain="localhost").expires
    assert expires is not None
    lifetime = expires - datetime.now(UTC)
    assert timedelta(hours=11, minutes=59) < lifetime <= timedelta(hours=12)
    assert client.get("/consent").status_code == 200


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PORTAL_ENV": "test", "PORTAL_SESSION_COOKIE_NAME": "__Host-session"}, "SECURE"),
        ({"PORTAL_ENV": "production", "PORTAL_SESSION_COOKIE_NAME": "session"}, "__Host-"),
        ({"PORTAL_ENV": "test", "PORTAL_SESSION_IDLE_MINUTES_STAFF": "0"}, "positive"),
    ],
)
def test_unsafe_session_settings_are_refused(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, environ={**environ, "PORTAL_SECRET_KEY": "s" * 48})


def test_the_session_limits_are_configurable(
    app_config: dict[str, Any],
    session_factory: sessionmaker[Session],
    make_user: Any,
    clock: Clock,
    published: None,
) -> None:
    quick = create_app({**app_config, "SESSION_IDLE_MINUTES": 5})
    quick.extensions["portal_sessionmaker"] = session_factory
    try:
        donor = logged_in(quick, make_user, "quick@example.org", "donor")
        clock.advance(minutes=4)
        assert donor.client.get("/consent").status_code == 200
        clock.advance(minutes=6)
        assert_sent_to_login(donor, "/consent")
    finally:
        quick.extensions["portal_engine"].dispose()

