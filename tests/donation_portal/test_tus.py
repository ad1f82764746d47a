"""tus 1.0.0 through the real routes: creation, resume, checksum, termination, expiry, limits.

Jobs run inline in tests (JOBS_INLINE), so a completed upload is processed when the request
that completed it returns.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import DonatedFile, ScopeKey, Upload, UploadPart

from .conftest import TOKEN, Browser
from .phi import real_file

CT = real_file("CT_small.dcm").content
MR = real_file("MR_small.dcm").content
TUS = {"Tus-Resumable": "1.0.0"}


class Tus:
    """A minimal tus client over the Flask test client, as Uppy's tus plugin speaks it."""

    def __init__(self, browser: Browser) -> None:
        self.client = browser.client
        page = browser.get("/donations/new")
        self.csrf = TOKEN.search(page).group(1)
        self.submission = secrets.token_hex(16)

    def headers(self, **extra: str) -> dict[str, str]:
        return {**TUS, "X-CSRFToken": self.csrf, **extra}

    def create(self, length: int, body: bytes | None = None, **extra: str):  # type: ignore[no-untyped-def]
        meta = "submission " + base64.b64encode(self.submission.encode()).decode()
        headers = self.headers(**{"Upload-Length": str(length), "Upload-Metadata": meta}, **extra)
        if body is not None:
            headers["Content-Type"] = "application/offset+octet-stream"
        return self.client.post("/uploads/", headers=headers, data=body or b"")

    def patch(self, url: str, offset: int, body: bytes, **extra: str):  # type: ignore[no-untyped-def]
        headers = self.headers(
            **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
            **extra,
        )
        return self.client.patch(url, headers=headers, data=body)

    def head(self, url: str):  # type: ignore[no-untyped-def]
        return self.client.head(url, headers=TUS)

    def send(self, content: bytes, pieces: int = 3) -> str:
        created = self.create(len(content))
        assert created.status_code == 201, created.get_data(as_text=True)
        url = created.headers["Location"]
        step = -(-len(content) // pieces)
        for offset in range(0, len(content), step):
            piece = content[offset : offset + step]
            digest = base64.b64encode(hashlib.sha256(piece).digest()).decode()
            done = self.patch(url, offset, piece, **{"Upload-Checksum": f"sha256 {digest}"})
            assert done.status_code == 204, done.get_data(as_text=True)
            assert int(done.headers["Upload-Offset"]) == offset + len(piece)
        return url


def upload_row(db_session: Session, url: str) -> Upload:
    db_session.expire_all()
    return db_session.get(Upload, url.rsplit("/", 1)[1])


def files(db_session: Session) -> list[DonatedFile]:
    db_session.expire_all()
    return list(db_session.scalars(select(DonatedFile).order_by(DonatedFile.id)))


def stored(app: Flask) -> set[str]:
    root = Path(app.config["STORAGE_DIR"])
    return {p.name for p in root.rglob("*.c4gh")}


def test_options_advertises_the_protocol_and_extensions(donor: Browser) -> None:
    reply = donor.client.options("/uploads/")
    assert reply.status_code == 204
    assert reply.headers["Tus-Version"] == "1.0.0"
    assert set(reply.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert "sha256" in reply.headers["Tus-Checksum-Algorithm"]


def test_an_upload_in_pieces_is_processed_once_complete(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    url = tus.send(CT)
    head = tus.head(url)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(CT))
    assert head.headers["Cache-Control"] == "no-store"
    upload = upload_row(db_session, url)
    assert upload.state == "done"
    (row,) = files(db_session)
    assert row.status == "accepted" and row.modality == "CT" and row.object_id
    # the quarantine key and parts are gone; only the stored object remains
    assert db_session.get(ScopeKey, upload.scope_id) is None
    assert db_session.scalars(select(UploadPart)).all() == []
    assert stored(app) == {f"{row.object_id}.c4gh"}


def test_creation_with_upload_sends_the_whole_file_in_one_request(
    donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    created = tus.create(len(MR), body=MR)
    assert created.status_code == 201
    assert created.headers["Upload-Offset"] == str(len(MR))
    assert "Upload-Expires" in created.headers
    assert [row.status for row in files(db_session)] == ["accepted"]


def test_creation_with_the_first_piece_only_is_resumed_with_patch(
    donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    assert len(CT) > 10_000
    created = tus.create(len(CT), body=CT[:10_000])
    assert created.status_code == 201
    assert created.headers["Upload-Offset"] == "10000"
    url = created.headers["Location"]
    assert tus.patch(url, 10_000, CT[10_000:]).status_code == 204
    assert [row.status for row in files(db_session)] == ["accepted"]


def test_creation_with_a_wrong_checksum_keeps_nothing(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    reply = tus.create(len(MR), body=MR, **{"Upload-Checksum": f"sha256 {wrong}"})
    assert reply.status_code == 460
    db_session.expire_all()
    assert db_session.scalars(select(Upload)).all() == []
    assert stored(app) == set()
    assert db_session.scalars(select(ScopeKey.scope_id)).all() == [
        key for key in db_session.scalars(select(ScopeKey.scope_id)) if "quarantine" not in key
    ]


def test_a_wrong_offset_is_a_conflict_and_changes_nothing(
    donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    url = tus.create(len(CT)).headers["Location"]
    assert tus.patch(url, 0, CT[:1000]).status_code == 204
    reply = tus.patch(url, 500, CT[500:2000])
    assert reply.status_code == 409
    assert "1000" in reply.get_json()["detail"]
    assert upload_row(db_session, url).offset == 1000


def test_a_checksum_mismatch_keeps_nothing_of_the_body(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    url = tus.create(len(CT)).headers["Location"]
    before = stored(app)
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    reply = tus.patch(url, 0, CT[:4096], **{"Upload-Checksum": f"sha256 {wrong}"})
    assert reply.status_code == 460
    assert upload_row(db_session, url).offset == 0
    assert stored(app) == before
    unsupported = tus.patch(url, 0, CT[:4096], **{"Upload-Checksum": "md5 AAAA"})
    assert unsupported.status_code == 400


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Tus-Resumable": "0.2.2"}, 412),
        ({"Content-Type": "application/octet-stream"}, 415),
        ({"Upload-Offset": "abc"}, 400),
    ],
)
def test_bad_patch_headers_get_the_tus_status(
    donor: Browser, db_session: Session, headers: dict[str, str], status: int
) -> None:
    tus = Tus(donor)
    url = tus.create(len(CT)).headers["Location"]
    sent = {
        **tus.headers(),
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
        **headers,
    }
    reply = donor.client.patch(url, headers=sent, data=CT[:100])
    assert reply.status_code == status
    if status == 412:
        assert reply.headers["Tus-Version"] == "1.0.0"
    assert upload_row(db_session, url).offset == 0


def test_a_body_longer_than_declared_is_refused_whole(
    donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    url = tus.create(100).headers["Location"]
    assert tus.patch(url, 0, b"x" * 101).status_code == 413
    assert upload_row(db_session, url).offset == 0


def test_creation_needs_a_length_and_a_submission(donor: Browser) -> None:
    tus = Tus(donor)
    assert donor.client.post("/uploads/", headers=tus.headers()).status_code == 400
    no_meta = tus.headers(**{"Upload-Length": "10"})
    assert donor.client.post("/uploads/", headers=no_meta).status_code == 400
    too_big = tus.create(app_limit := 10**15)
    assert too_big.status_code == 413, app_limit


def test_another_donors_upload_is_not_found(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    url = tus.create(len(CT)).headers["Location"]
    other = Browser(app.test_client())
    assert other.register("mallory@example.org").status_code == 303
    assert other.sign_consent().status_code == 200
    thief = Tus(other)
    assert thief.head(url).status_code == 404
    assert thief.patch(url, 0, CT[:100]).status_code == 404
    assert other.client.delete(url, headers=thief.headers()).status_code == 404
    assert upload_row(db_session, url).offset == 0


def test_termination_destroys_the_parts_and_the_key(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    before = stored(app)
    url = tus.create(len(CT)).headers["Location"]
    assert tus.patch(url, 0, CT[:5000]).status_code == 204
    assert len(stored(app) - before) == 1
    assert donor.client.delete(url, headers=tus.headers()).status_code == 204
    upload = upload_row(db_session, url)
    assert upload.state == "terminated"
    assert db_session.get(ScopeKey, upload.scope_id) is None
    assert stored(app) == before
    assert tus.head(url).status_code == 410
    assert tus.patch(url, 5000, CT[5000:]).status_code == 410


def test_an_empty_patch_at_the_end_of_a_finished_upload_changes_nothing(
    donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    url = tus.send(CT, pieces=1)
    reply = tus.patch(url, len(CT), b"")
    assert reply.status_code == 204
    assert reply.headers["Upload-Offset"] == str(len(CT))
    assert tus.patch(url, len(CT), b"x").status_code == 413
    assert [row.status for row in files(db_session)] == ["accepted"]


def test_a_finished_upload_cannot_be_terminated(donor: Browser) -> None:
    tus = Tus(donor)
    url = tus.send(CT, pieces=1)
    assert donor.client.delete(url, headers=tus.headers()).status_code == 409


def test_no_uploads_after_withdrawal(donor: Browser, db_session: Session) -> None:
    tus = Tus(donor)
    url = tus.create(len(CT)).headers["Location"]
    assert tus.patch(url, 0, CT[:1000]).status_code == 204
    withdrawn = donor.submit(
        "/consent/withdraw", {"scope": "all", "mode": "stop_use", "confirm": "yes"}
    )
    assert withdrawn.status_code == 200, withdrawn.get_data(as_text=True)[:500]
    assert tus.patch(url, 1000, CT[1000:]).status_code == 410
    assert upload_row(db_session, url).state == "cancelled"
    assert tus.create(len(CT)).status_code == 403


def test_the_same_image_donated_again_is_kept_once(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    tus = Tus(donor)
    tus.send(CT, pieces=1)
    Tus(donor).send(CT, pieces=2)
    first, second = files(db_session)
    assert first.status == "accepted"
    assert second.status == "duplicate" and second.object_id is None
    assert "before" in second.reason
    assert stored(app) == {f"{first.object_id}.c4gh"}


def test_per_donor_limits_answer_429(app: Flask, donor: Browser) -> None:
    app.config["UPLOAD_MAX_FILES_PER_DAY"] = 2
    tus = Tus(donor)
    assert tus.create(100).status_code == 201
    assert tus.create(100).status_code == 201
    refused = tus.create(100)
    assert refused.status_code == 429
    assert "tomorrow" in refused.get_json()["detail"]
    app.config["UPLOAD_MAX_FILES_PER_DAY"] = 100
    app.config["UPLOAD_MAX_BYTES_IN_FLIGHT"] = 250
    assert tus.create(100).status_code == 429


def test_only_logged_in_donors_upload(app: Flask, published: None) -> None:
    client = app.test_client()
    reply = client.post("/uploads/", headers={**TUS, "Upload-Length": "10"})
    assert reply.status_code in (400, 401)  # CSRF or login: never a created upload


def test_the_donation_page_polls_each_files_state(donor: Browser, db_session: Session) -> None:
    tus = Tus(donor)
    url = tus.send(CT, pieces=1)
    donation_id = upload_row(db_session, url).donation_id
    status = donor.client.get(f"/donations/{donation_id}/status.json")
    assert status.status_code == 200
    assert status.get_json() == {
        "files": [{"position": 1, "status": "accepted", "label": "Accepted", "reason": None}],
        "pending": False,
    }
    page = donor.get(f"/donations/{donation_id}")
    assert "donation-status.js" in page and "data-status-url" in page
