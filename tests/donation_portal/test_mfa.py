"""Second factors (issue 12, point 1): TOTP with recovery codes, mandatory for staff, optional
for donors, and a fresh code before key actions (step-up).

Everything goes through the pages as a person would: the key is read off the enrolment page,
codes are computed from it as an authenticator app does. The clock the server checks codes
and sessions by (``sessions.now``) is moved to step past the step-up window.
"""

from __future__ import annotations

import re

import pyotp
import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.models import AuditEntry
from donation_portal.adapters.mfa_models import TotpCredential
from donation_portal.web import mfa as mfa_pages
from donation_portal.web import sessions

from .conftest import PASSWORD, SECOND_FACTORS, Browser, totp_code

KEY = re.compile(r'<code class="secret">([A-Z2-7 ]+)</code>')
RECOVERY = re.compile(r"<li><code>([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})</code></li>")


def mfa_actions(db_session: Session) -> list[tuple[str, dict]]:
    query = (
        select(AuditEntry).where(AuditEntry.action.startswith("auth.mfa")).order_by(AuditEntry.id)
    )
    return [(entry.action, entry.detail or {}) for entry in db_session.scalars(query)]


def _code(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at((sessions.now() // 30 + offset_steps) * 30)


def _enrol(browser: Browser) -> tuple[str, list[str]]:
    """Set up an app through the pages; returns its key and the recovery codes shown."""
    page = browser.submit("/account/two-factor", {}, action="/account/two-factor/app")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<svg" in html  # the QR code, inline (no script, no external image)
    secret = KEY.search(html).group(1).replace(" ", "")
    confirmed = browser.submit(
        "/account/two-factor", {"code": _code(secret, -1)}, action="/account/two-factor/app/confirm"
    )
    assert confirmed.status_code == 200
    return secret, RECOVERY.findall(confirmed.get_data(as_text=True))


def _password_step(browser: Browser, email: str) -> None:
    reply = browser.submit("/login", {"email": email, "password": PASSWORD})
    assert reply.status_code == 303 and reply.headers["Location"] == "/login/code"


def test_a_steward_without_a_second_factor_can_only_enrol_then_everything_opens(
    app: Flask,
    browser: Browser,
    make_user,
    db_session: Session,
) -> None:
    make_user("new-steward@example.org", "steward", second_factor=False)
    reply = browser.login("new-steward@example.org")
    assert reply.status_code == 303 and reply.headers["Location"] == "/account/two-factor"
    for path in ("/steward/", "/steward/audit", "/steward/requests/"):
        held = browser.client.get(path)
        assert held.status_code == 303 and held.headers["Location"] == "/account/two-factor"
    assert browser.client.get("/api/requests").status_code == 403
    secret, codes = _enrol(browser)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert browser.client.get("/steward/").status_code == 200
    assert mfa_actions(db_session) == [("auth.mfa_enrolled", {"factor": "totp"})]
    stored = db_session.get(TotpCredential, db_session.scalar(select(TotpCredential.user_id)))
    assert secret.encode() not in stored.secret  # sealed, not stored as typed


def test_an_enrolled_login_needs_a_code_and_a_wrong_one_is_refused_and_audited(
    app: Flask,
    browser: Browser,
    make_user,
    db_session: Session,
) -> None:
    make_user("steward@example.org", "steward")
    secret = SECOND_FACTORS["steward@example.org"]
    _password_step(browser, "steward@example.org")
    assert browser.client.get("/steward/").status_code == 302  # not logged in yet
    wrong = f"{(int(_code(secret)) + 1) % 1_000_000:06d}"
    refused = browser.submit("/login/code", {"code": wrong})
    assert refused.status_code == 401
    assert "not right" in refused.get_data(as_text=True)
    assert (
        browser.submit("/login/code", {"code": totp_code("steward@example.org")}).status_code == 303
    )
    assert browser.client.get("/steward/").status_code == 200
    assert ("auth.mfa_failed", {"reason": "wrong-code"}) in mfa_actions(db_session)
    assert mfa_actions(db_session)[-1] == ("auth.mfa_verified", {"factor": "totp"})


def test_a_code_used_once_is_refused_the_second_time(
    app: Flask,
    browser: Browser,
    make_user,
    db_session: Session,
) -> None:
    make_user("researcher@example.org", "researcher")
    code = totp_code("researcher@example.org")
    _password_step(browser, "researcher@example.org")
    assert browser.submit("/login/code", {"code": code}).status_code == 303
    browser.logout()
    _password_step(browser, "researcher@example.org")
    replayed = browser.submit("/login/code", {"code": code})
    assert replayed.status_code == 401
    assert "used already" in replayed.get_data(as_text=True)
    assert ("auth.mfa_failed", {"reason": "replayed-code"}) in mfa_actions(db_session)


def test_a_recovery_code_logs_in_once(
    app: Flask,
    client,
    make_user,
    published: None,
) -> None:
    make_user("admin@example.org", "admin", second_factor=False)
    first = Browser(client)
    first.login("admin@example.org")
    _, codes = _enrol(first)
    first.logout()
    for expected in (303, 401):
        _password_step(first, "admin@example.org")
        reply = first.submit("/login/code", {"code": codes[0].upper().replace("-", " ")})
        assert reply.status_code == expected
    first.submit("/login/code", {"code": codes[1]})
    assert "<strong>8</strong> unused recovery codes" in first.get("/account/two-factor")


def test_too_many_wrong_codes_or_a_slow_answer_send_back_to_the_password(
    app: Flask,
    browser: Browser,
    make_user,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_user("steward@example.org", "steward")
    _password_step(browser, "steward@example.org")
    for _ in range(mfa_pages.MAX_FAILURES):
        reply = browser.submit("/login/code", {"code": "000000"})
    assert reply.status_code == 303 and reply.headers["Location"] == "/login"
    assert browser.client.get("/login/code").headers["Location"] == "/login"

    _password_step(browser, "steward@example.org")
    later = sessions.now() + 6 * 60
    monkeypatch.setattr(sessions, "now", lambda: later)
    reply = browser.submit("/login/code", {"code": totp_code("steward@example.org")})
    assert reply.status_code == 303 and reply.headers["Location"] == "/login"


def test_key_actions_need_a_code_from_the_last_five_minutes(
    app: Flask,
    browser: Browser,
    make_user,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_user("researcher@example.org", "researcher")
    assert browser.login("researcher@example.org").status_code == 303
    made = browser.submit("/researcher/tokens", {"name": "fresh"})
    assert made.status_code == 200  # typed a code at login, a minute ago: no step-up

    later = sessions.now() + 6 * 60
    monkeypatch.setattr(sessions, "now", lambda: later)
    asked = browser.submit("/researcher/tokens", {"name": "stale"})
    assert asked.status_code == 303
    assert asked.headers["Location"] == "/account/confirm?next=/researcher/tokens"
    download = browser.client.get("/researcher/releases/abc/manifest.csv")
    assert download.headers["Location"] == (
        "/account/confirm?next=/researcher/releases/abc/manifest.csv"
    )
    confirmed = browser.submit(
        "/account/confirm?next=/researcher/tokens",
        {"code": totp_code("researcher@example.org")},
    )
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/researcher/tokens"
    assert browser.submit("/researcher/tokens", {"name": "stale"}).status_code == 200


def test_changing_the_release_key_needs_a_fresh_code(
    app: Flask, browser: Browser, make_user, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user("researcher@example.org", "researcher")
    assert browser.login("researcher@example.org").status_code == 303
    later = sessions.now() + 6 * 60
    monkeypatch.setattr(sessions, "now", lambda: later)
    form = {"affiliation": "Lab", "public_key": "not checked before the step-up"}
    asked = browser.submit("/researcher/profile", form)
    assert asked.status_code == 303
    assert asked.headers["Location"] == "/account/confirm?next=/researcher/profile"
    assert "upload your" in browser.get("/researcher/")  # nothing was saved


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_step_up_never_sends_anyone_to_another_site(
    app: Flask,
    browser: Browser,
    make_user,
    target: str,
) -> None:
    make_user("steward@example.org", "steward")
    browser.login("steward@example.org")
    reply = browser.submit(
        f"/account/confirm?next={target}", {"code": totp_code("steward@example.org")}
    )
    assert reply.status_code == 303 and reply.headers["Location"] == "/steward/"


def test_a_donor_may_add_and_remove_a_second_factor(
    app: Flask,
    donor: Browser,
    db_session: Session,
) -> None:
    assert "This is optional" in donor.get("/account/two-factor")
    assert donor.client.get("/donations/new").status_code == 200  # never forced on donors
    secret, _ = _enrol(donor)
    donor.logout()
    _password_step(donor, "donor@example.org")
    assert donor.submit("/login/code", {"code": _code(secret)}).status_code == 303
    removed = donor.submit("/account/two-factor", {}, action="/account/two-factor/remove")
    assert removed.status_code == 303
    donor.logout()
    assert donor.login("donor@example.org").headers["Location"] == "/"
    assert [action for action, _ in mfa_actions(db_session)] == [
        "auth.mfa_enrolled",
        "auth.mfa_verified",
        "auth.mfa_removed",
    ]


def test_a_steward_cannot_remove_but_can_replace_the_app(
    app: Flask,
    browser: Browser,
    make_user,
    db_session: Session,
) -> None:
    make_user("steward@example.org", "steward")
    browser.login("steward@example.org")
    assert "Remove two-factor login" not in browser.get("/account/two-factor")
    browser.submit("/account/two-factor", {}, action="/account/two-factor/remove")
    assert "needs a second factor" in browser.get("/account/two-factor")
    old = SECOND_FACTORS["steward@example.org"]
    new, _ = _enrol(browser)
    assert new != old
    browser.logout()
    _password_step(browser, "steward@example.org")
    assert browser.submit("/login/code", {"code": _code(old, 1)}).status_code == 401
    assert browser.submit("/login/code", {"code": _code(new, 1)}).status_code == 303


def test_the_demo_setup_prints_each_staff_accounts_key_once(
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from donation_portal import create_app
    from donation_portal.cli import dev_setup

    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("PORTAL_ENV", "development")
    monkeypatch.delenv("PORTAL_DATABASE_URL", raising=False)
    assert dev_setup.main([]) == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines() if "@demo" in line}
    assert set(rows) == {"donor", "steward", "researcher", "admin"}
    assert len(rows["donor"]) == 2  # e-mail and password: no app for donors
    email, password, key = rows["steward"]
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    steward = Browser(app.test_client())
    reply = steward.submit("/login", {"email": email, "password": password})
    assert reply.headers["Location"] == "/login/code"
    assert steward.submit("/login/code", {"code": _code(key)}).status_code == 303
    assert dev_setup.main([]) == 0
    assert key not in capsys.readouterr().out
