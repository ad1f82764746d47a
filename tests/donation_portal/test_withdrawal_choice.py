"""A whole withdrawal asks the donor what happens to the files: nothing is chosen for them."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters.models import StoredObject

from .conftest import Browser
from .phi import real_file

CHOOSE = "Choose whether your files are erased or kept but no longer used."
MODE_RADIO = re.compile(r'<input[^>]*\bname="mode"[^>]*>')
CODE = re.compile(r'<code class="secret">([^<]+)</code>')
CONSENT_ID = re.compile(r"Consent ID: <code>([a-z2-7]+)</code>")


def _sign_and_upload(browser: Browser) -> tuple[str, str]:
    """A donor who signed and donated one file; the consent ID and the withdrawal code."""
    assert browser.register("chooser@example.org").status_code == 303
    page = browser.sign_consent(("research", "general_research")).get_data(as_text=True)
    browser.upload([real_file("CT_small.dcm").content])
    return CONSENT_ID.search(page).group(1), CODE.search(page).group(1)


def _nothing_changed(db_session: Session, consent_id: str) -> None:
    assert [event.kind for event in consents.events(db_session, consent_id)] == ["given"]
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 1


@pytest.mark.parametrize("logged_in", [True, False], ids=["donor-page", "receipt-code-page"])
def test_a_whole_withdrawal_without_a_chosen_mode_is_refused_and_changes_nothing(
    browser: Browser, db_session: Session, logged_in: bool
) -> None:
    consent_id, code = _sign_and_upload(browser)
    form = {"confirm": "yes", "scope": "all"}
    if logged_in:
        response = browser.submit("/consent/withdraw", form)
    else:
        browser.logout()
        response = browser.submit("/withdraw", {**form, "consent_id": consent_id, "code": code})
    assert response.status_code == 422
    assert CHOOSE in response.get_data(as_text=True)
    _nothing_changed(db_session, consent_id)


def test_both_withdrawal_pages_offer_stop_use_and_erase_with_neither_chosen(
    browser: Browser,
) -> None:
    _sign_and_upload(browser)
    donor_page = browser.get("/consent/withdraw")
    browser.logout()
    for page in (donor_page, browser.get("/withdraw")):
        radios = MODE_RADIO.findall(page)
        assert sorted(re.search(r'value="(\w+)"', r).group(1) for r in radios) == [
            "erase",
            "stop_use",
        ]
        assert not any(re.search(r"\bchecked\b", radio) for radio in radios), radios
        assert "Stop future use</strong>: the files are kept" in page
        assert "Erase</strong>: the key to your files is destroyed" in page
