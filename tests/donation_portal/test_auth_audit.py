"""Authentication events are in the audit trail: failed and successful logins, logouts,
expired sessions and refused authorisations; under opaque references, never an e-mail
address or a password."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

import consent as consents
from consent.models import AuditEntry
from donation_portal.web import sessions

from .conftest import PASSWORD, TOKEN, Browser

WRONG = "not the password at all"
GUESS = "a guess at a password"


def auth_entries(db_session: Session) -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.action.startswith("auth.")).order_by(AuditEntry.id)
    return list(db_session.scalars(query))


def assert_no_secrets(entries: list[AuditEntry], *secrets: str) -> None:
    for entry in entries:
        text = json.dumps([entry.actor, entry.subject_type, entry.subject_id, entry.detail])
        assert "@" not in text and "example" not in text.lower(), text
        for secret in secrets:
            assert secret not in text, text


def test_logins_logouts_expiry_and_refusals_are_audited_without_addresses_or_passwords(
    browser: Browser, make_user: Any, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user("known@example.org", "donor")
    me = f"user:{user.id}"
    assert browser.login("known@example.org", WRONG).status_code == 401
    assert browser.login(" Ghost@Example.org", GUESS).status_code == 401
    assert browser.login("ghost@example.org", PASSWORD).status_code == 401
    assert browser.login("other.ghost@example.org", GUESS).status_code == 401
    assert browser.login("known@example.org").status_code == 303
    assert browser.client.get("/steward/").status_code == 403
    assert browser.logout().status_code == 303
    moment = sessions.now()
    monkeypatch.setattr(sessions, "now", lambda: moment)
    assert browser.login("known@example.org").status_code == 303
    monkeypatch.setattr(sessions, "now", lambda: moment + 31 * 60)
    assert browser.client.get("/consent").status_code == 303

    entries = auth_entries(db_session)
    assert [entry.action for entry in entries] == [
        "auth.login_failed",
        "auth.login_failed",
        "auth.login_failed",
        "auth.login_failed",
        "auth.login",
        "auth.forbidden",
        "auth.logout",
        "auth.login",
        "auth.session_expired",
    ]
    wrong, ghost, ghost_again, other_ghost, *_ = entries
    assert (wrong.actor, wrong.subject_id) == (me, str(user.id))
    assert wrong.detail == {"reason": "password"}
    assert ghost.actor.startswith("email-hmac:") and ghost.detail == {"reason": "no-account"}
    assert ghost_again.actor == ghost.actor  # the same address, however typed: one actor
    assert other_ghost.actor != ghost.actor
    forbidden = entries[5]
    assert (forbidden.actor, forbidden.subject_type, forbidden.subject_id) == (
        me,
        "endpoint",
        "steward.consents",
    )
    assert forbidden.detail == {"role": "donor"}
    assert {entry.actor for entry in entries[4:]} == {me}
    assert entries[-1].detail == {"reason": "idle"}
    assert_no_secrets(entries, PASSWORD, WRONG, GUESS, "known", "ghost")
    assert consents.audit.verify(db_session).ok


def test_the_address_pseudonym_depends_on_the_secret_key(
    app: Flask, browser: Browser, db_session: Session
) -> None:
    """Without the key, nobody can tell which address a pseudonym stands for by hashing
    candidate addresses."""
    browser.login("ghost@example.org", GUESS)
    app.config["SECRET_KEY"] = "another-secret-key-for-this-test"
    Browser(app.test_client()).login("ghost@example.org", GUESS)
    first, second = auth_entries(db_session)
    assert first.actor != second.actor


@pytest.mark.parametrize(
    ("role", "method", "path", "endpoint"),
    [
        ("researcher", "POST", "/uploads/", "tus.create"),
        ("researcher", "GET", "/consent", "donor.consent"),
        ("donor", "GET", "/researcher/", "researcher.home"),
    ],
)
def test_refusals_are_audited_wherever_they_are_made(
    browser: Browser,
    make_user: Any,
    db_session: Session,
    role: str,
    method: str,
    path: str,
    endpoint: str,
) -> None:
    user = make_user(f"{role}@example.org", role)
    browser.login(f"{role}@example.org")
    token = TOKEN.search(browser.get("/login")).group(1)
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "10", "X-CSRFToken": token}
    response = browser.client.open(path, method=method, headers=headers)
    assert response.status_code == 403
    refused = [entry for entry in auth_entries(db_session) if entry.action == "auth.forbidden"]
    assert [(entry.actor, entry.subject_id) for entry in refused] == [
        (f"user:{user.id}", endpoint)
    ]


def test_a_refusal_of_someone_not_logged_in_is_audited_as_anonymous(
    browser: Browser, db_session: Session
) -> None:
    form = {
        "consent_id": "a" * 26,
        "code": "wrong-code-123",
        "scope": "all",
        "mode": "erase",
        "confirm": "yes",
    }
    assert browser.submit("/withdraw", form).status_code == 403
    (refused,) = auth_entries(db_session)
    assert (refused.actor, refused.subject_id, refused.detail) == (
        "anonymous",
        "public.withdraw",
        {},
    )
