"""Accounts: registration, login, rate limit, revocable sessions, CSRF, roles, staff CLI."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from donation_portal.workflows import accounts

from .conftest import PASSWORD, Browser


def test_registration_logs_the_donor_in_and_stores_an_argon2id_hash(
    browser: Browser, db_session: Session
) -> None:
    response = browser.register("New.Donor@Example.org")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/consent")
    user = accounts.find_user(db_session, "new.donor@example.org")
    assert user is not None and user.role == "donor"
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert "Sign the consent" in browser.get("/consent")


def test_registration_errors_are_explained(browser: Browser) -> None:
    browser.register("taken@example.org")
    browser.logout()
    duplicate = browser.register("taken@example.org")  # the same page as for a new address
    assert duplicate.status_code == 200
    assert "We have sent you an e-mail." in duplicate.get_data(as_text=True)
    mismatch = browser.submit(
        "/register",
        {"email": "b@example.org", "password": PASSWORD, "password_confirm": PASSWORD + "x"},
    )
    assert mismatch.status_code == 422
    assert "The two passwords differ." in mismatch.get_data(as_text=True)
    short = browser.register("c@example.org", password="short")
    assert short.status_code == 422
    assert "Your password is too short." in short.get_data(as_text=True)


def test_login_with_a_wrong_password_is_refused(browser: Browser, make_user: Any) -> None:
    make_user("steward@example.org", "steward")
    wrong = browser.login("steward@example.org", "not the password")
    assert wrong.status_code == 401
    assert "Wrong e-mail address or password." in wrong.get_data(as_text=True)
    right = browser.login("STEWARD@example.org")
    assert right.status_code == 303
    assert right.headers["Location"].endswith("/steward/")


def test_login_attempts_are_rate_limited(browser: Browser, make_user: Any) -> None:
    make_user("target@example.org", "donor")
    statuses = [browser.login("target@example.org", f"guess {n}").status_code for n in range(11)]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    assert "Too many attempts" in browser.login("target@example.org").get_data(as_text=True)


def test_login_starts_a_fresh_session(browser: Browser, make_user: Any) -> None:
    make_user("fresh@example.org", "donor")
    browser.get("/login")
    with browser.client.session_transaction() as session:
        session["planted_by_attacker"] = "x"
    assert browser.login("fresh@example.org").status_code == 303
    with browser.client.session_transaction() as session:
        assert "planted_by_attacker" not in session
        assert "_user_id" in session


def test_logout_revokes_the_session_on_the_server(browser: Browser, make_user: Any) -> None:
    make_user("leaver@example.org", "donor")
    browser.login("leaver@example.org")
    stolen = browser.client.get_cookie("session").value
    assert browser.get("/donations/new", status=302)  # logged in: redirected to sign consent
    assert browser.logout().status_code == 303
    browser.client.set_cookie("session", stolen)
    response = browser.client.get("/consent")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_forms_without_a_csrf_token_are_refused(browser: Browser, make_user: Any) -> None:
    make_user("csrf@example.org", "donor")
    response = browser.client.post(
        "/login", data={"email": "csrf@example.org", "password": PASSWORD}
    )
    assert response.status_code == 400
    assert "form has expired" in response.get_data(as_text=True)
    with browser.client.session_transaction() as session:
        assert "_user_id" not in session


def test_pages_are_open_to_their_roles_only(browser: Browser, make_user: Any) -> None:
    assert browser.client.get("/steward/").status_code == 302
    make_user("d@example.org", "donor")
    make_user("s@example.org", "steward")
    make_user("r@example.org", "researcher")
    browser.login("d@example.org")
    assert browser.client.get("/steward/").status_code == 403
    assert browser.client.get("/researcher/").status_code == 403
    browser.logout()
    browser.login("r@example.org")
    assert browser.client.get("/researcher/").status_code == 200
    assert browser.client.get("/consent").status_code == 403
    browser.logout()
    browser.login("s@example.org")
    for page in ("/steward/", "/steward/donations", "/steward/withdrawals"):
        assert browser.client.get(page).status_code == 200


def test_staff_accounts_are_created_from_the_command_line(
    app: Flask, browser: Browser, db_session: Session
) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "--role", "steward", "Head.Steward@example.org"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    user = accounts.find_user(db_session, "head.steward@example.org")
    assert user is not None and user.role == "steward"
    assert browser.login("head.steward@example.org").status_code == 303
    again = runner.invoke(
        args=["users", "create", "--role", "steward", "head.steward@example.org"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert again.exit_code != 0
    assert "already exists" in again.output


def test_production_cookies_are_secure(production_app: Flask, make_user: Any) -> None:
    make_user("prod@example.org", "donor")
    client = production_app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    browser = Browser(client)
    response = browser.login("prod@example.org")
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
