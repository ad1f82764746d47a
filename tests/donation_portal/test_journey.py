"""The donor journey through the real routes, with real DICOM files from pydicom."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask import Flask
from pydicom import dcmread
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import storage
from consent import Consent
from donation_portal.adapters.keystore import DatabaseKeyStore
from donation_portal.adapters.models import DonatedFile, Donation, ScopeKey, StoredObject

from .conftest import Browser
from .phi import RealFile, real_file

CT = real_file("CT_small.dcm").content
JOURNEY_FILES = ("CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm", "693_J2KI.dcm")


def stored_files(app: Flask) -> list[Path]:
    root = Path(app.config["STORAGE_DIR"])
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def store_for(app: Flask, session: Session) -> storage.ObjectStore:
    return storage.ObjectStore(
        storage.LocalBackend(app.config["STORAGE_DIR"]),
        storage.KeyRing.load(app.config["KEY_FILE"]),
        DatabaseKeyStore(session),
    )


def test_donor_journey_end_to_end(app: Flask, browser: Browser, db_session: Session) -> None:
    files = [real_file(name) for name in JOURNEY_FILES]
    pages: list[str] = []

    assert browser.register("ada@example.org").status_code == 303
    pages.append(browser.get("/consent"))
    signed = browser.sign_consent(name="Ada Lovelace")
    assert signed.status_code == 200
    assert "withdrawal code" in signed.get_data(as_text=True).lower()
    upload = browser.upload([f.content for f in files])
    assert upload.status_code == 303
    donation_page = upload.headers["Location"]
    page = browser.get(donation_page)
    pages += [page, browser.get("/")]
    assert page.count("Accepted") == len(files)

    consent = db_session.scalars(select(Consent)).one()
    rows = db_session.scalars(select(DonatedFile).order_by(DonatedFile.position)).all()
    assert [r.status for r in rows] == ["accepted"] * len(files)
    assert {r.consent_id for r in rows} == {consent.id}
    assert {r.modality for r in rows} == {"CT", "MR"}
    store = store_for(app, db_session)
    for row, original in zip(rows, files, strict=True):
        info = db_session.get(StoredObject, row.object_id)
        assert info.scope_id == consent.id
        plain = store.read_bytes(
            storage.ObjectInfo(
                info.object_id,
                info.scope_id,
                info.size,
                info.sha256,
                info.stored_size,
                info.stored_sha256,
            )
        )
        ds = dcmread(io.BytesIO(plain))
        assert str(ds.PatientName) == consent.pseudonym
        assert (
            ds.SOPInstanceUID
            == row.sop_instance_uid
            != dcmread(io.BytesIO(original.content)).SOPInstanceUID
        )

    on_disk = stored_files(app)
    assert len(on_disk) == len(files)
    for path in on_disk:
        raw = path.read_bytes()
        assert b"DICM" not in raw
        for original in files:
            for value in original.identifiers:
                assert value.encode() not in raw, f"{value!r} of {original.name} on disk"
            assert not any(part in str(path) for part in original.identifiers)

    pages.append(browser.get("/consent/withdraw"))
    for html in pages:
        _assert_no_phi(html, files)
    assert "Ada Lovelace" not in "".join(pages[1:])  # signed name is not shown back

    copies = {path: path.read_bytes() for path in on_disk}  # what a backup would hold
    withdrawn = browser.submit(
        "/consent/withdraw", {"confirm": "yes", "scope": "all", "mode": "erase"}
    )
    assert withdrawn.status_code == 200
    assert "destroyed" in withdrawn.get_data(as_text=True)
    assert db_session.get(ScopeKey, consent.id) is None
    assert stored_files(app) == []
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 0
    assert "Erased" in browser.get(donation_page)
    for path, raw in copies.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
        with pytest.raises(storage.StorageError):
            store_for(app, db_session).read_bytes(
                storage.ObjectInfo(
                    path.name.split(".")[0], consent.id, 1, "0" * 64, len(raw), "0" * 64
                )
            )
    after = browser.client.get("/donations/new")
    assert after.status_code == 302 and after.headers["Location"].endswith("/consent")


def _assert_no_phi(html: str, files: list[RealFile]) -> None:
    for original in files:
        for value in original.identifiers:
            assert value not in html, f"{value!r} of {original.name} shown on a page"


def test_resubmitting_the_same_form_is_idempotent(donor: Browser, db_session: Session) -> None:
    content = real_file("CT_small.dcm").content
    form = donor.upload_form()
    first = donor.upload([content], form)
    second = donor.upload([content], form)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert db_session.scalar(select(func.count()).select_from(Donation)) == 1
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The file is empty."),
        (b"These are my notes about my scan, not a DICOM file.\n" * 20, "DICOM"),
        (real_file("CT_small.dcm").content[:700], ""),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_files_are_refused_and_nothing_is_stored(
    app: Flask, donor: Browser, db_session: Session, content: bytes, message: str
) -> None:
    response = donor.upload([content])
    assert response.status_code == 303
    html = donor.get(response.headers["Location"])
    assert "Not accepted" in html
    assert message in html
    assert "Traceback" not in html
    assert db_session.scalars(select(DonatedFile.status)).all() == ["rejected"]
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 0
    assert stored_files(app) == []


def test_a_bad_file_beside_good_ones_is_reported_per_file(
    donor: Browser, db_session: Session
) -> None:
    good = real_file("MR_small.dcm").content
    response = donor.upload([good, b"not dicom at all" * 50])
    assert response.status_code == 303
    page = donor.get(response.headers["Location"])
    assert "Accepted" in page and "Not accepted" in page
    statuses = db_session.scalars(select(DonatedFile.status).order_by(DonatedFile.position)).all()
    assert statuses == ["accepted", "rejected"]
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 1


def test_uploading_without_a_signed_consent_is_refused(
    app: Flask, browser: Browser, db_session: Session
) -> None:
    browser.register("unsigned@example.org")
    assert browser.client.get("/donations/new").status_code == 302
    # The upload page redirects to the consent; post the upload form anyway.
    response = browser.submit(
        "/consent",
        {
            "submission_key": "0" * 32,
            "files": [(io.BytesIO(CT), "a")],
        },
        action="/donations/new",
        content_type="multipart/form-data",
    )
    assert response.status_code == 409
    assert "sign the consent" in response.get_data(as_text=True)
    assert db_session.scalar(select(func.count()).select_from(Donation)) == 0
    assert stored_files(app) == []


def test_consent_needs_the_required_module_and_a_typed_name(
    browser: Browser, db_session: Session
) -> None:
    browser.register("careful@example.org")
    unticked = browser.sign_consent(modules=[])
    assert unticked.status_code == 422
    assert "required" in unticked.get_data(as_text=True)
    unnamed = browser.sign_consent(name=" ")
    assert unnamed.status_code == 422
    assert db_session.scalar(select(func.count()).select_from(Consent)) == 0


def test_an_unexpected_error_shows_no_trace_and_stores_nothing(
    app: Flask, donor: Browser, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anonymize

    def explode(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("simulated failure inside the engine")

    monkeypatch.setattr(anonymize, "deidentify", explode)
    response = donor.upload([real_file("CT_small.dcm").content])
    assert response.status_code == 303
    html = donor.get(response.headers["Location"])
    assert "problem on our side" in html
    assert "Traceback" not in html and "simulated failure" not in html
    assert db_session.scalars(select(DonatedFile.status)).all() == ["rejected"]
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 0
    assert stored_files(app) == []


def test_a_resubmission_racing_the_first_returns_the_first_donation(
    donor: Browser, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second request misses the first's row at its first look (as in a race) and then
    collides with it on the unique submission key: it must answer with the first donation."""
    from donation_portal.workflows import uploads

    form = donor.upload_form()
    first = donor.upload([CT], form)
    real_find = uploads._donation_by_key
    calls = iter([None])
    monkeypatch.setattr(
        uploads, "_donation_by_key", lambda s, k: next(calls, None) or real_find(s, k)
    )
    second = donor.upload([CT], form)
    assert second.status_code == 303
    assert second.headers["Location"] == first.headers["Location"]
    assert db_session.scalar(select(func.count()).select_from(StoredObject)) == 1


def test_a_submission_key_of_another_donor_is_refused(
    app: Flask, donor: Browser, db_session: Session, make_user
) -> None:
    form = donor.upload_form()
    assert donor.upload([CT], form).status_code == 303
    donor.logout()
    other = Browser(app.test_client())
    other.register("other@example.org")
    other.sign_consent()
    token, _ = other.upload_form()
    response = other.upload([CT], (token, form[1]))
    assert response.status_code == 400
    assert db_session.scalar(select(func.count()).select_from(Donation)) == 1
