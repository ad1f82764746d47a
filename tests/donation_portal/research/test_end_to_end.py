"""Issue 6 acceptance: donors with different consents, two researchers, stewards, releases."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters.models import AccessRequest, Donation, Release, User

from ..conftest import PASSWORD, Browser
from ..phi import real_file

CT = real_file("CT_small.dcm").content
MR = real_file("MR_small.dcm").content
GRU_ONLY, DS = "DUO:0000042", "DUO:0000007"
ETHICS = b"%PDF-1.4 Ethics board approval no. 2026-17"
ASTHMA, DIABETES = "MONDO:0004979", "MONDO:0005015"


def _keygen(home: Path, name: str) -> tuple[Path, Path]:
    sk, pk = home / f"{name}.sec", home / f"{name}.pub"
    tool = Path(sys.executable).parent / "crypt4gh-keygen"
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(
        [str(tool), "--sk", str(sk), "--pk", str(pk), "--nocrypt"], capture_output=True, env=env
    )
    assert done.returncode == 0, done.stderr
    return sk, pk


def _decrypt(home: Path, sk: Path, data: bytes) -> bytes:
    tool = Path(sys.executable).parent / "crypt4gh"
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(
        [str(tool), "decrypt", "--sk", str(sk)], input=data, capture_output=True, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _publish_template(db_session: Session, name: str, **module: object) -> None:
    spec = {**consents.default_template_spec(), "name": name, "version": "1"}
    spec["modules"] = [{**spec["modules"][0], **module}]
    consents.publish_template(db_session, consents.validate_template_spec(spec))
    db_session.commit()


def _donate(app: Flask, email: str, content: bytes) -> Browser:
    donor = Browser(app.test_client())
    assert donor.register(email).status_code == 303
    assert donor.sign_consent().status_code == 200
    assert donor.upload([content]).status_code in (200, 303)
    return donor


def _login(app: Flask, make_user, email: str, role: str) -> Browser:  # type: ignore[no-untyped-def]
    make_user(email, role)
    browser = Browser(app.test_client())
    assert browser.login(email, PASSWORD).status_code == 303
    return browser


def _request(researcher: Browser, ethics: bytes | None = None, **use: str) -> str:
    form = {"title": "Lung nodules", "abstract": "A study of lung imaging data.", **use}
    counted = researcher.submit("/researcher/requests/new", {**form, "action": "count"})
    assert counted.status_code == 200
    page = counted.get_data(as_text=True)
    files = {"ethics": (io.BytesIO(ethics), "approval.pdf")} if ethics else {}
    submitted = researcher.submit("/researcher/requests/new", {**form, "action": "submit", **files})
    assert submitted.status_code == 303, submitted.get_data(as_text=True)
    return page


@pytest.mark.usefixtures("published")
def test_releases_hold_exactly_the_eligible_files_and_honour_withdrawal(
    app: Flask,
    make_user,
    db_session: Session,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    _donate(app, "health@example.org", MR)  # HMB, non-commercial, publish
    _publish_template(db_session, "general-research", duo=[GRU_ONLY])
    general_donor = _donate(app, "general@example.org", CT)  # general research use
    _publish_template(db_session, "asthma-only", duo=[DS], diseases=[ASTHMA])
    _donate(app, "asthma@example.org", CT)  # disease-specific: asthma only
    stewards = [_login(app, make_user, f"s{n}@example.org", "steward") for n in (1, 2)]
    for donation in db_session.scalars(select(Donation)).all():
        action = f"/steward/donations/{donation.id}/decision"
        decided = stewards[0].submit("/steward/donations", {"decision": "approve"}, action=action)
        assert decided.status_code == 303

    home = tmp_path / "home"
    home.mkdir()
    keys = {}
    researchers = {}
    for name in ("company", "academic"):
        researcher = _login(app, make_user, f"{name}@example.org", "researcher")
        keys[name] = _keygen(home, name)
        profile = {"affiliation": f"{name} lab", "public_key": keys[name][1].read_text()}
        assert researcher.submit("/researcher/profile", profile).status_code == 303
        researchers[name] = researcher

    commercial = _request(
        researchers["company"], purpose="health", commercial="yes", publishes="yes"
    )
    assert "1 donor," in commercial
    disease = _request(
        researchers["academic"], ETHICS, purpose="disease", disease=DIABETES, publishes="yes"
    )
    stored = b"".join(
        p.read_bytes() for p in Path(app.config["STORAGE_DIR"]).rglob("*") if p.is_file()
    )
    assert b"Ethics board" not in stored
    ethics_request = db_session.scalars(
        select(AccessRequest).where(AccessRequest.ethics_object_id.is_not(None))
    ).one()
    assert ethics_request.use["ethics_approved"] is True
    queue_page = stewards[0].get("/steward/requests/")
    assert "academic@example.org" in queue_page and "academic lab" in queue_page
    document = stewards[0].client.get(f"/steward/requests/{ethics_request.id}/ethics")
    assert document.status_code == 200 and document.get_data() == ETHICS
    assert researchers["academic"].client.get(
        f"/steward/requests/{ethics_request.id}/ethics").status_code in (302, 403)
    assert "2 donors," in disease  # not the asthma-only donor

    expires = (date.today() + timedelta(days=30)).isoformat()
    queue = "/steward/requests/"
    for access in db_session.scalars(select(AccessRequest)).all():
        action = f"/steward/requests/{access.id}/decision"
        form = {"decision": "approve", "expires": expires}
        assert stewards[0].submit(queue, form, action=action).status_code == 303
        again = stewards[0].submit(queue, form, action=action)
        assert again.status_code == 409  # four eyes: not the same steward twice
        assert stewards[1].submit(queue, form, action=action).status_code == 303

    releases = {r.researcher_id: r for r in db_session.scalars(select(Release)).all()}
    by_name = {}
    for name in ("company", "academic"):
        user = db_session.scalars(select(User).where(User.email == f"{name}@example.org")).one()
        by_name[name] = releases[user.id]
    assert [i.modality for i in by_name["company"].items] == ["CT"]
    assert sorted(i.modality for i in by_name["academic"].items) == ["CT", "MR"]
    asthma = _request(researchers["company"], purpose="disease", disease=ASTHMA, publishes="yes")
    assert "3 donors," in asthma  # the asthma-only consent covers asthma research only

    release = by_name["company"]
    url = f"/researcher/releases/{release.id}/files/1"
    assert researchers["academic"].client.get(url).status_code == 404  # another researcher
    response = researchers["company"].client.get(url)
    assert response.status_code == 200
    plain = _decrypt(home, keys["company"][0], response.get_data())
    dataset = pydicom.dcmread(io.BytesIO(plain))
    assert dataset.Modality == "CT"
    assert str(dataset.SOPInstanceUID) == release.items[0].sop_instance_uid

    csv_manifest = researchers["company"].get(f"/researcher/releases/{release.id}/manifest.csv")
    assert release.items[0].sop_instance_uid in csv_manifest
    header = csv_manifest.splitlines()[0].split(",")
    assert {"body_part", "patient_sex", "patient_age_years", "study_year"} <= set(header)
    academic = by_name["academic"]
    tar = researchers["academic"].client.get(f"/researcher/releases/{academic.id}/release.tar")
    assert tar.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(tar.get_data())) as archive:
        members = archive.getmembers()
        assert len(members) == 2
        first = archive.extractfile(members[0]).read()
    assert pydicom.dcmread(io.BytesIO(_decrypt(home, keys["academic"][0], first))).Modality

    token_page = researchers["company"].submit("/researcher/", {}, action="/researcher/tokens")
    token = re.search(r'class="token">([^<]+)<', token_page.get_data(as_text=True)).group(1)
    api = app.test_client()  # no session: the token alone
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/releases").status_code == 401
    assert [r["id"] for r in api.get("/api/releases", headers=bearer).get_json()] == [release.id]
    items = api.get(f"/api/releases/{release.id}/manifest", headers=bearer).get_json()["items"]
    assert [i["sop_instance_uid"] for i in items] == [release.items[0].sop_instance_uid]
    assert (items[0]["patient_sex"], items[0]["patient_age_years"]) == ("O", 0)  # CT_small
    assert items[0]["study_year"] == release.items[0].study_year < 2004  # shifted
    assert api.get(f"/api/releases/{academic.id}/manifest", headers=bearer).status_code == 404
    api_tar = api.get(f"/api/releases/{release.id}/release.tar", headers=bearer)
    with tarfile.open(fileobj=io.BytesIO(api_tar.get_data())) as archive:
        assert len(archive.getmembers()) == 1
    api_csv = api.get(f"/api/releases/{release.id}/manifest.csv", headers=bearer)
    assert release.items[0].sop_instance_uid in api_csv.get_data(as_text=True)
    read = db_session.scalars(
        select(consents.AuditEntry).where(consents.AuditEntry.action == "release.manifest_read")
    ).all()
    assert len(read) >= 3  # web CSV, API JSON, API CSV: reading a manifest is audited
    assert api.get(f"/api/releases/{academic.id}/release.tar", headers=bearer).status_code == 404

    withdrawn = general_donor.submit(
        "/consent/withdraw", {"confirm": "yes", "scope": "all", "mode": "stop_use"}
    )
    assert withdrawn.status_code in (200, 303)
    assert researchers["company"].client.get(url).status_code == 410
    page = researchers["company"].get("/researcher/")
    files = researchers["company"].get(f"/researcher/releases/{release.id}")
    assert "Withdrawn by the donor" in files and "Withdrawal notice" in page
    assert release.items[0].sop_instance_uid in page
    notice = re.search(r"/researcher/notices/(\d+)/acknowledge", page).group(0)
    assert researchers["company"].submit("/researcher/", {}, action=notice).status_code == 303
    assert researchers["company"].submit("/researcher/", {}, action=notice).status_code == 409
    assert api.get(f"/api/releases/{release.id}/files/1", headers=bearer).status_code == 410
    assert api.get("/api/notices", headers=bearer).get_json()[0]["acknowledged_at"]
    touched = stewards[0].get("/steward/withdrawals")
    assert release.id in touched and academic.id in touched

    asthma_request = db_session.scalars(
        select(AccessRequest).where(AccessRequest.status == "submitted")
    ).one()
    action = f"/steward/requests/{asthma_request.id}/decision"
    no_reason = stewards[0].submit(queue, {"decision": "reject"}, action=action)
    assert no_reason.status_code == 422
    form = {"decision": "reject", "reason": "The abstract does not justify the data."}
    assert stewards[0].submit(queue, form, action=action).status_code == 303
    assert "does not justify the data" in researchers["company"].get("/researcher/")

    academic_file = f"/researcher/releases/{academic.id}/files/1"
    with app.extensions["portal_sessionmaker"]() as other:
        past = datetime(2000, 1, 1, tzinfo=UTC)
        other.execute(update(Release).where(Release.id == academic.id).values(expires_at=past))
        other.commit()
    assert researchers["academic"].client.get(academic_file).status_code == 410
    assert consents.audit.query(db_session, action="release.downloaded")
