"""Steward review, withdrawals, templates and the audit trail, through the routes and CLI."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml
from flask import Flask
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters.models import DonatedFile, Donation, StoredObject

from .conftest import PASSWORD, Browser
from .phi import real_file

CT = real_file("CT_small.dcm").content
SCREEN_CAPTURE = real_file("SC_rgb_small_odd.dcm").content  # quarantined by the engine


def another_instance(content: bytes) -> bytes:
    """The same kind of image as a different instance (a donor's image is kept once)."""
    dataset = dcmread(io.BytesIO(content))
    dataset.SOPInstanceUID = generate_uid()
    out = io.BytesIO()
    dataset.save_as(out)
    return out.getvalue()


@pytest.fixture
def steward(app: Flask, make_user) -> Browser:  # type: ignore[no-untyped-def]
    user = make_user("steward@example.org", "steward")
    browser = Browser(app.test_client())
    assert browser.login("steward@example.org", PASSWORD).status_code == 303
    browser.user = user  # type: ignore[attr-defined]
    return browser


def _decide(steward: Browser, action: str, decision: str, reason: str = ""):  # type: ignore[no-untyped-def]
    return steward.submit(
        "/steward/donations", {"decision": decision, "reason": reason}, action=action
    )


def test_a_steward_approves_or_rejects_donations_with_who_and_when(
    donor: Browser, steward: Browser, db_session: Session
) -> None:
    donor.upload([CT])
    donation = db_session.scalars(select(Donation)).one()
    action = f"/steward/donations/{donation.id}/decision"
    assert "Approve into pool" in steward.get("/steward/donations")
    no_reason = _decide(steward, action, "reject")
    assert no_reason.status_code == 409
    assert "reason" in no_reason.get_data(as_text=True)
    assert _decide(steward, action, "approve").status_code == 303
    db_session.refresh(donation)
    assert donation.review_status == "approved"
    assert donation.reviewed_by == steward.user.id and donation.reviewed_at is not None
    assert _decide(steward, action, "reject", "too late").status_code == 409
    entries = consents.audit.query(db_session, action="donation.approved")
    assert [e.subject_id for e in entries] == [donation.id]
    assert entries[0].actor == f"user:{steward.user.id}"


def test_quarantined_files_stay_out_until_cleared_or_are_deleted_when_refused(
    app: Flask, donor: Browser, steward: Browser, db_session: Session
) -> None:
    donor.upload([SCREEN_CAPTURE, another_instance(SCREEN_CAPTURE)])
    files = db_session.scalars(select(DonatedFile).order_by(DonatedFile.position)).all()
    assert [f.status for f in files] == ["needs_review", "needs_review"]
    page = steward.get("/steward/donations")
    assert "Clear for research" in page
    cleared = _decide(steward, f"/steward/files/{files[0].id}/decision", "approve")
    refused = _decide(steward, f"/steward/files/{files[1].id}/decision", "reject")
    assert cleared.status_code == refused.status_code == 303
    for row in files:
        db_session.refresh(row)
    assert files[0].status == "accepted" and files[0].reviewed_by == steward.user.id
    assert files[1].status == "rejected" and files[1].object_id is None
    assert len(db_session.scalars(select(StoredObject)).all()) == 1
    stored = [p for p in Path(app.config["STORAGE_DIR"]).rglob("*") if p.is_file()]
    assert len(stored) == 1
    again = _decide(steward, f"/steward/files/{files[1].id}/decision", "approve")
    assert again.status_code == 409


def test_a_held_file_of_a_withdrawn_consent_cannot_be_cleared(
    donor: Browser, steward: Browser, db_session: Session
) -> None:
    donor.upload([SCREEN_CAPTURE])
    donor.submit("/consent/withdraw", {"confirm": "yes", "scope": "all", "mode": "stop_use"})
    held = db_session.scalars(select(DonatedFile)).one()
    cleared = _decide(steward, f"/steward/files/{held.id}/decision", "approve")
    assert cleared.status_code == 409
    assert "no longer in force" in cleared.get_data(as_text=True)
    db_session.refresh(held)
    assert held.status == "needs_review"


def test_withdrawals_are_listed_with_their_files_and_acknowledged_once(
    donor: Browser, steward: Browser, db_session: Session
) -> None:
    donor.upload([CT])
    donor.submit("/consent/withdraw", {"confirm": "yes", "scope": "all", "mode": "stop_use"})
    page = steward.get("/steward/withdrawals")
    event = db_session.scalars(
        select(consents.ConsentEvent).where(consents.ConsentEvent.kind == "withdrawn")
    ).one()
    action = f"/steward/withdrawals/{event.id}/acknowledge"
    assert action in page
    assert steward.submit("/steward/withdrawals", {}, action=action).status_code == 303
    assert steward.submit("/steward/withdrawals", {}, action=action).status_code == 409
    assert consents.audit.query(db_session, action="withdrawal.acknowledged")


def test_a_module_withdrawal_is_listed_with_the_module_it_took_away(
    browser: Browser, steward: Browser, db_session: Session
) -> None:
    template = consents.current_template(db_session)
    optional = next(m["id"] for m in template.modules if not m.get("required"))
    donor = browser
    assert donor.register("donor@example.org").status_code == 303
    assert donor.sign_consent(modules=("research", optional)).status_code == 200
    done = donor.submit(
        "/consent/withdraw", {"confirm": "yes", "scope": "modules", "modules": optional}
    )
    assert done.status_code == 200, done.get_data(as_text=True)[-1500:]
    assert f"module {optional}" in steward.get("/steward/withdrawals")


def test_the_fhir_export_and_the_template_page(
    donor: Browser, steward: Browser, db_session: Session
) -> None:
    consent = db_session.scalars(select(consents.Consent)).one()
    response = steward.client.get(f"/steward/consents/{consent.id}/fhir")
    assert response.status_code == 200
    assert response.mimetype == "application/fhir+json"
    assert response.get_json()["resourceType"] == "Consent"
    exported = db_session.scalars(
        select(consents.AuditEntry).where(consents.AuditEntry.action == "consent.exported")
    ).one()
    assert (exported.subject_id, exported.detail) == (consent.id, {"format": "fhir-r4"})
    assert steward.client.get("/steward/consents/nosuchconsent/fhir").status_code == 404
    assert donor.client.get(f"/steward/consents/{consent.id}/fhir").status_code == 403
    assert consents.current_template(db_session).id[:12] in steward.get("/steward/templates")


def test_the_audit_trail_is_browsable_and_filtered(
    donor: Browser, steward: Browser, db_session: Session
) -> None:
    donor.upload([CT])
    everything = steward.get("/steward/audit")
    for action in ("consent.given", "donation.uploaded", "auth.login"):
        assert action in everything
    filtered = steward.get("/steward/audit?action=consent.")
    assert "consent.given" in filtered and "donation.uploaded" not in filtered
    assert steward.client.get("/steward/audit?since=not-a-date").status_code == 400
    assert "Ada Donor" not in everything and "donor@example.org" not in everything


def test_audit_verify_names_the_first_altered_entry(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    runner = app.test_cli_runner()
    intact = runner.invoke(args=["audit", "verify"])
    assert intact.exit_code == 0, intact.output
    assert "intact" in intact.output
    victim = consents.audit.query(db_session, action="consent.given")[0]
    db_session.execute(
        update(consents.AuditEntry)
        .where(consents.AuditEntry.id == victim.id)
        .values(actor="user:999")
    )
    db_session.commit()
    broken = runner.invoke(args=["audit", "verify"])
    assert broken.exit_code == 1
    assert f"broken at entry {victim.id}" in broken.output


def test_audit_verify_with_an_anchor_detects_deleted_newest_entries(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    runner = app.test_cli_runner()
    intact = runner.invoke(args=["audit", "verify"])
    anchor = re.search(r"anchor: (\d+:[0-9a-f]{64})", intact.output).group(1)
    assert runner.invoke(args=["audit", "verify", "--anchor", anchor]).exit_code == 0
    newest = int(anchor.split(":")[0])
    db_session.execute(delete(consents.AuditEntry).where(consents.AuditEntry.id == newest))
    db_session.commit()
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0  # a chain alone cannot tell
    cut = runner.invoke(args=["audit", "verify", "--anchor", anchor])
    assert cut.exit_code == 1
    assert f"broken at entry {newest}" in cut.output and "cut short" in cut.output
    bad = runner.invoke(args=["audit", "verify", "--anchor", "12:nothex"])
    assert bad.exit_code == 2


def test_publishing_a_template_from_a_file(
    app: Flask, db_session: Session, tmp_path: Path
) -> None:
    spec = consents.default_template_spec()
    spec = {**spec, "version": "2", "title": spec["title"] + " (revised)"}
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    runner = app.test_cli_runner()
    first = runner.invoke(args=["consent", "publish", str(path)])
    assert first.exit_code == 0, first.output
    assert re.search(r"Published: imaging-donation 2 \(en\) sha256:[0-9a-f]{64}", first.output)
    again = runner.invoke(args=["consent", "publish", str(path)])
    assert again.exit_code == 0 and "Already published" in again.output
    spec["modules"] = [{**spec["modules"][0], "duo": ["DUO:9999999"]}]
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    unknown = runner.invoke(args=["consent", "publish", str(path)])
    assert unknown.exit_code != 0
    assert "DUO:9999999" in unknown.output
    assert consents.audit.query(db_session, action="template.published")


def test_expired_consents_are_recorded_by_the_daily_command(
    app: Flask, db_session: Session, donor: Browser
) -> None:
    consent = db_session.scalars(select(consents.Consent)).one()
    runner = app.test_cli_runner()
    assert "0 consent(s)" in runner.invoke(args=["consent", "expire"]).output
    db_session.execute(
        update(consents.Consent)
        .where(consents.Consent.id == consent.id)
        .values(expires_at=consents.Consent.signed_at)
    )
    db_session.commit()
    result = runner.invoke(args=["consent", "expire"])
    assert result.exit_code == 0 and "1 consent(s)" in result.output
    assert consents.state(db_session, consent.id) == consents.EXPIRED
    assert donor.client.get("/donations/new").status_code == 302  # no new uploads
