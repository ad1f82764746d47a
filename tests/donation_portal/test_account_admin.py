"""Admins list the accounts (a page at a time) and disable or re-enable them: a disabled
account cannot log in (told only "wrong password"), and loses its logins and API tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.models import AuditEntry
from donation_portal.workflows import accounts, tokens

from .account_helpers import log_in_directly
from .conftest import Browser


def _audited(db_session: Session, action: str) -> list[tuple[str, str, Any]]:
    query = select(AuditEntry.actor, AuditEntry.subject_id, AuditEntry.detail).where(
        AuditEntry.action == action
    )
    return [tuple(row) for row in db_session.execute(query)]


def test_only_admins_see_the_accounts_a_page_at_a_time(
    app: Flask, make_user: Any, monkeypatch: pytest.MonkeyPatch, published: None
) -> None:
    monkeypatch.setattr(accounts, "USERS_PAGE_SIZE", 2)
    admin = make_user("admin@example.org", "admin")
    for name in ("a", "b", "c"):
        make_user(f"{name}@example.org", "donor")
    steward = log_in_directly(app, make_user("steward@example.org", "steward"))
    assert steward.client.get("/admin/users").status_code == 403
    browser = log_in_directly(app, admin)
    first = browser.get("/admin/users")
    assert "admin@example.org" in first and "a@example.org" in first
    assert "b@example.org" not in first and "Page 1 of 3" in first
    third = browser.get("/admin/users?page=3")
    assert "steward@example.org" in third and "Next" not in third
    assert "Page 3 of 3" in browser.get("/admin/users?page=99999999999")  # capped, no error
    assert "Page 1 of 3" in browser.get("/admin/users?page=-4")


def test_a_disabled_account_is_logged_out_refused_at_login_and_loses_its_tokens(
    app: Flask, make_user: Any, db_session: Session, published: None
) -> None:
    admin = log_in_directly(app, make_user("admin@example.org", "admin"))
    donor = make_user("donor@example.org", "donor")
    researcher = make_user("res@example.org", "researcher")
    donor_browser = Browser(app.test_client())
    assert donor_browser.login("donor@example.org").status_code == 303
    now = datetime.now(UTC)
    token, _ = tokens.issue(db_session, researcher, "script", [tokens.READ_RELEASES], 30, now)

    for user in (donor, researcher):
        reply = admin.submit("/admin/users", {}, action=f"/admin/users/{user.id}/disable")
        assert reply.status_code == 303
    assert "is disabled" in admin.get("/admin/users")

    assert donor_browser.client.get("/account").status_code == 302  # its login ended
    refused = Browser(app.test_client()).login("donor@example.org")
    assert refused.status_code == 401
    assert "Wrong e-mail address or password." in refused.get_data(as_text=True)
    with pytest.raises(tokens.TokenRefused):
        tokens.authenticate(db_session, token, now)
    disabled = _audited(db_session, "auth.account_disabled")
    admin_ref = f"user:{accounts.find_user(db_session, 'admin@example.org').id}"
    assert (admin_ref, str(donor.id), {"sessions_ended": 1, "tokens_revoked": 0}) in disabled
    assert (admin_ref, str(researcher.id), {"sessions_ended": 0, "tokens_revoked": 1}) in disabled
    failed = _audited(db_session, "auth.login_failed")
    assert (f"user:{donor.id}", str(donor.id), {"reason": "disabled"}) in failed

    assert (
        admin.submit("/admin/users", {}, action=f"/admin/users/{donor.id}/enable").status_code
        == 303
    )
    assert Browser(app.test_client()).login("donor@example.org").status_code == 303
    assert (admin_ref, str(donor.id), {}) in _audited(db_session, "auth.account_enabled")


def test_an_admin_cannot_disable_their_own_account(
    app: Flask, make_user: Any, db_session: Session, published: None
) -> None:
    admin_user = make_user("admin@example.org", "admin")
    admin = log_in_directly(app, admin_user)
    reply = admin.submit("/admin/users", {}, action=f"/admin/users/{admin_user.id}/disable")
    assert reply.status_code == 303
    assert "You cannot disable your own account." in admin.get("/admin/users")
    db_session.expire_all()
    assert accounts.find_user(db_session, "admin@example.org").disabled_at is None


def test_a_donor_cannot_disable_anyone(app: Flask, make_user: Any, published: None) -> None:
    other = make_user("other@example.org", "donor")
    donor = log_in_directly(app, make_user("donor@example.org", "donor"))
    reply = donor.submit("/account", {}, action=f"/admin/users/{other.id}/disable")
    assert reply.status_code == 403
