"""Receipts, withdrawal with and without login, through the real routes and CLI commands."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters.models import StoredObject

from .conftest import Browser
from .phi import real_file

RECEIPT_JSON = re.compile(r'href="data:application/json;base64,([A-Za-z0-9+/=]+)"')
CODE = re.compile(r'<code class="secret">([^<]+)</code>')
CONSENT_ID = re.compile(r"Consent ID: <code>([a-z2-7]+)</code>")


def receipt_of(html: str) -> dict:
    match = RECEIPT_JSON.search(html)
    assert match, "no receipt download on the page"
    return json.loads(base64.b64decode(match.group(1)))


@pytest.fixture
def signed(browser: Browser) -> dict:
    browser.register("receipt@example.org")
    page = browser.sign_consent(("research", "general_research"), name="Ruth Receipt")
    page = page.get_data(as_text=True)
    return {
        "page": page,
        "receipt": receipt_of(page),
        "code": CODE.search(page).group(1),
        "consent_id": CONSENT_ID.search(page).group(1),
    }


def verify_on_page(browser: Browser, document: bytes):  # type: ignore[no-untyped-def]
    return browser.submit(
        "/receipts/verify",
        {"receipt_file": (io.BytesIO(document), "receipt.json")},
        content_type="multipart/form-data",
    )


def test_signing_hands_over_a_receipt_that_the_public_page_verifies(
    app: Flask, browser: Browser, signed: dict
) -> None:
    receipt = signed["receipt"]["receipt"]
    assert receipt["consent_id"] == signed["consent_id"]
    assert receipt["withdrawal_code"] == signed["code"]
    assert "Ruth Receipt" not in json.dumps(signed["receipt"])
    browser.logout()
    genuine = verify_on_page(browser, json.dumps(signed["receipt"]).encode())
    assert genuine.status_code == 200
    assert "Genuine" in genuine.get_data(as_text=True)
    tampered = json.loads(json.dumps(signed["receipt"]))
    tampered["receipt"]["duo_terms"].append("DUO:0000018")
    refused = verify_on_page(browser, json.dumps(tampered).encode())
    assert refused.status_code == 422
    assert "altered" in refused.get_data(as_text=True)
    keys = browser.client.get("/.well-known/receipt-keys.json").get_json()
    assert keys["keys"][0]["kid"] == signed["receipt"]["signature"]["kid"]
    assert "d" not in keys["keys"][0]  # never the private part


def test_the_readable_receipt_page_matches_the_signed_one(signed: dict) -> None:
    match = re.search(r'href="data:text/html;base64,([A-Za-z0-9+/=]+)"', signed["page"])
    page = base64.b64decode(match.group(1)).decode()
    assert signed["consent_id"] in page and signed["code"] in page
    assert "Ruth Receipt" not in page


def test_the_cli_verifies_receipts(app: Flask, signed: dict, tmp_path: Path) -> None:
    good = tmp_path / "receipt.json"
    good.write_text(json.dumps(signed["receipt"]))
    result = app.test_cli_runner().invoke(args=["consent", "verify-receipt", str(good)])
    assert result.exit_code == 0, result.output
    assert signed["consent_id"] in result.output
    forged = json.loads(good.read_text())
    forged["receipt"]["state"] = "withdrawn"
    bad = tmp_path / "forged.json"
    bad.write_text(json.dumps(forged))
    result = app.test_cli_runner().invoke(args=["consent", "verify-receipt", str(bad)])
    assert result.exit_code == 1
    assert "INVALID" in result.output


def test_withdrawal_without_login_with_the_receipt_code(
    app: Flask, browser: Browser, signed: dict, db_session: Session
) -> None:
    browser.upload([real_file("CT_small.dcm").content])
    browser.logout()
    form = {"consent_id": signed["consent_id"], "scope": "all", "mode": "erase", "confirm": "yes"}
    wrong = browser.submit("/withdraw", {**form, "code": "wrong-code-123"})
    assert wrong.status_code == 403
    assert consents.state(db_session, signed["consent_id"]) == consents.ACTIVE
    unknown = browser.submit("/withdraw", {**form, "consent_id": "a" * 26, "code": signed["code"]})
    assert unknown.status_code == 403
    assert unknown.get_data(as_text=True).count("do not match") == 1  # same answer: no oracle

    done = browser.submit("/withdraw", {**form, "code": signed["code"]})
    assert done.status_code == 200, done.get_data(as_text=True)
    assert "destroyed" in done.get_data(as_text=True)
    assert consents.state(db_session, signed["consent_id"]) == consents.WITHDRAWN
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 0
    receipt = receipt_of(done.get_data(as_text=True))["receipt"]
    assert receipt["state"] == consents.WITHDRAWN and "withdrawal_code" not in receipt

    again = browser.submit("/withdraw", {**form, "code": signed["code"]})
    assert again.status_code == 409
    events = consents.events(db_session, signed["consent_id"])
    assert [e.kind for e in events] == ["given", "withdrawn"]


def test_guessing_withdrawal_codes_is_rate_limited(browser: Browser, signed: dict) -> None:
    browser.logout()
    form = {
        "consent_id": signed["consent_id"], "scope": "all", "mode": "stop_use", "confirm": "yes"
    }
    statuses = [
        browser.submit("/withdraw", {**form, "code": f"guess-{n:08d}"}).status_code
        for n in range(6)
    ]
    assert statuses[:5] == [403] * 5
    assert statuses[5] == 429
    # Even the right code waits now: the limit is on the client, not on wrong answers only.
    assert browser.submit("/withdraw", {**form, "code": signed["code"]}).status_code == 429


def test_a_donor_withdraws_an_optional_module_and_keeps_the_rest(
    browser: Browser, signed: dict, db_session: Session
) -> None:
    template = consents.current_template(db_session)
    optional = [m["id"] for m in template.modules if not m.get("required")]
    assert optional
    response = browser.submit(
        "/consent/withdraw", {"confirm": "yes", "scope": "modules", "modules": optional[0]}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert consents.state(db_session, signed["consent_id"]) == consents.ACTIVE
    assert optional[0] not in consents.granted_modules(db_session, signed["consent_id"])
    receipt = receipt_of(response.get_data(as_text=True))["receipt"]
    assert optional[0] not in {m["id"] for m in receipt["modules"]}


def test_only_some_parts_with_none_ticked_withdraws_nothing(
    browser: Browser, signed: dict, db_session: Session
) -> None:
    response = browser.submit("/consent/withdraw", {"confirm": "yes", "scope": "modules"})
    assert response.status_code == 422
    assert "Tick the part(s) you want to withdraw." in response.get_data(as_text=True)
    assert consents.state(db_session, signed["consent_id"]) == consents.ACTIVE
    assert len(consents.granted_modules(db_session, signed["consent_id"])) == 2


def test_a_genuine_receipt_of_a_consent_this_portal_no_longer_holds_says_so(
    browser: Browser, signed: dict, db_session: Session
) -> None:
    """For example a receipt shown to a portal restored from an older backup."""
    receipt = json.dumps(signed["receipt"]).encode()
    known = verify_on_page(browser, receipt).get_data(as_text=True)
    assert "The consent is <strong>active</strong> today." in known
    consent_id = signed["consent_id"]
    events = consents.ConsentEvent
    db_session.execute(delete(events).where(events.consent_id == consent_id))
    db_session.execute(delete(consents.Consent).where(consents.Consent.id == consent_id))
    db_session.commit()
    reply = verify_on_page(browser, receipt)
    assert reply.status_code == 200
    page = reply.get_data(as_text=True)
    assert "Genuine." in page and "holds no record of that consent" in page


def test_stop_future_use_keeps_the_files_but_excludes_them(
    browser: Browser, signed: dict, db_session: Session
) -> None:
    browser.upload([real_file("MR_small.dcm").content])
    response = browser.submit(
        "/consent/withdraw", {"confirm": "yes", "scope": "all", "mode": "stop_use"}
    )
    assert response.status_code == 200
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 1
    assert signed["consent_id"] in consents.excluded_ids(db_session)
    assert browser.submit(
        "/consent/withdraw", {"confirm": "yes", "scope": "all", "mode": "stop_use"}
    ).status_code == 409


def test_a_new_template_version_is_offered_at_the_next_visit(
    browser: Browser, signed: dict, db_session: Session
) -> None:
    spec = consents.default_template_spec()
    consents.publish_template(db_session, {**spec, "version": "2", "title": "Revised text"})
    db_session.commit()
    assert "Please review it" in browser.get("/")
    page = browser.get("/consent")
    assert "Revised text" in page and "new version" in page
    renewed = browser.sign_consent(name="Ruth Receipt")
    assert renewed.status_code == 200
    new_id = CONSENT_ID.search(renewed.get_data(as_text=True)).group(1)
    assert new_id != signed["consent_id"]
    assert consents.state(db_session, signed["consent_id"]) == consents.SUPERSEDED
    assert consents.in_force(db_session, signed["consent_id"])  # still covers its files
    assert "Please review it" not in browser.get("/")


def test_german_speaking_donors_read_the_german_text(
    browser: Browser, db_session: Session
) -> None:
    for spec in consents.default_template_specs():
        consents.publish_template(db_session, spec)
    db_session.commit()
    browser.register("de@example.org")
    page = browser.client.get("/consent", headers={"Accept-Language": "de-DE,de;q=0.9"})
    german = consents.current_template(db_session, "de")
    assert german.title in page.get_data(as_text=True)
