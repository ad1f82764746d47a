"""Password rules (OWASP ASVS 2.1): 8 to 128 characters, any of them, no composition rules,
nothing common or guessable; explained in words a donor understands."""

from __future__ import annotations

import pytest

from donation_portal.workflows import accounts

from .conftest import PASSWORD, Browser


@pytest.mark.parametrize(
    "password",
    [
        PASSWORD,  # a few words, all lower case: no composition rules
        "Zug fährt um 7 ab",  # any characters, spaces and umlauts too
        "q8#Vt2!m",  # 8 characters suffice when they are not guessable
        "w" + "ordlessly long passphrase " * 4 + "ends",  # 110 characters
        ("Wir spenden Bilder fuer die Forschung, damit andere gesund werden! " * 2)[:128],
    ],
)
def test_good_passwords_are_accepted(password: str) -> None:
    assert accounts.password_problem(password, "donor@example.org") is None


@pytest.mark.parametrize(
    ("password", "words"),
    [
        ("Password123!", "too easy to guess"),
        ("passwort1234", "too easy to guess"),
        ("qwertzuiop", "too easy to guess"),
        ("annika.mueller1", "too easy to guess"),  # the e-mail address's own words
        ("Mueller2024", "too easy to guess"),
        ("datenspende2024", "too easy to guess"),
        ("x7#Qm2!", "too short"),
        ("x9#" * 43, "too long"),  # 129
    ],
)
def test_short_long_common_and_guessable_passwords_are_refused(password: str, words: str) -> None:
    problem = accounts.password_problem(password, "annika.mueller@example.org")
    assert problem is not None and words in problem


def test_the_registration_form_states_the_rules_and_refuses_a_common_password(
    browser: Browser,
) -> None:
    page = browser.get("/register")
    assert "At least 8 characters; we recommend\n15 or more" in page
    assert 'minlength="8"' in page and "maxlength" not in page  # no silent cutting of a paste
    refused = browser.register("new@example.org", password="Password123!")
    assert refused.status_code == 422
    assert "This password is too easy to guess" in refused.get_data(as_text=True)
    assert browser.register("new@example.org", password="q8#Vt2!m uhu").status_code == 303


def test_the_command_line_refuses_a_common_password_too(app, db_session) -> None:  # type: ignore[no-untyped-def]
    result = app.test_cli_runner().invoke(
        args=["users", "create", "--role", "steward", "s@example.org"],
        input="Password123!\nPassword123!\n",
    )
    assert result.exit_code != 0
    assert "too easy to guess" in result.output
    assert accounts.find_user(db_session, "s@example.org") is None
