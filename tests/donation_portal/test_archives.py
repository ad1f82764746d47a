"""A hospital CD sent as one ZIP archive: every image inside becomes a donated file of its own.

Sent through the real tus routes; jobs run inline, so the archive is processed when the
request that completed it returns.
"""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import pytest
from flask import Flask
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import consent as consents
from consent.audit import AuditEntry
from donation_portal.adapters.models import ScopeKey, StoredObject, UploadPart
from donation_portal.worker import tasks
from donation_portal.workflows import archives, ingest

from .conftest import Browser
from .phi import real_file
from .test_tus import Tus, files, stored, upload_row

CT = real_file("CT_small.dcm").content
MR = real_file("MR_small.dcm").content


def slice_of(content: bytes) -> bytes:
    """The same image under a new SOP Instance UID: another slice, as far as storage cares."""
    dataset = dcmread(io.BytesIO(content))
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    out = io.BytesIO()
    dataset.save_as(out)
    return out.getvalue()


def zipped(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return out.getvalue()


def marked_encrypted(content: bytes, name: str) -> bytes:
    """Set the "encrypted" flag of one entry, in its local and its central header, as a
    password-protected archive marks its entries (``zipfile`` cannot write those)."""
    data = bytearray(content)
    archive = zipfile.ZipFile(io.BytesIO(content))
    data[archive.getinfo(name).header_offset + 6] |= 0x1
    central = archive.start_dir
    while data[central + 46 : central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    data[central + 8] |= 0x1
    return bytes(data)


def a_cd(images: list[bytes]) -> list[tuple[str, bytes]]:
    """What a hospital CD holds: a DICOMDIR, a viewer program, a note, and the images."""
    return [
        ("DICOMDIR", b"\0" * 128 + b"DICM" + b"\0" * 64),
        ("VIEWER/viewer.exe", b"MZ" + b"\0" * 4000),
        ("README.TXT", b"Insert the CD and start viewer.exe"),
        (".DS_Store", b"\0" * 100),
        *[(f"DICOM/ST000001/SE000001/IM{i:06d}", image) for i, image in enumerate(images)],
    ]


def test_every_image_of_a_cd_archive_becomes_a_donated_file(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    images = [slice_of(CT) for _ in range(3)] + [MR]
    url = Tus(donor).send(zipped(a_cd(images)))
    upload = upload_row(db_session, url)
    assert upload.state == "done"
    rows = files(db_session)
    assert [row.status for row in rows] == ["accepted"] * 4
    assert sorted(row.modality for row in rows) == ["CT", "CT", "CT", "MR"]
    assert len({row.position for row in rows}) == 4
    assert sorted(row.member for row in rows) == [5, 6, 7, 8]  # the entries' places in the ZIP
    assert {row.size for row in rows} == {len(image) for image in images}
    assert stored(app) == {f"{row.object_id}.c4gh" for row in rows}
    assert db_session.get(ScopeKey, upload.scope_id) is None
    assert db_session.scalars(select(UploadPart)).all() == []
    status = donor.client.get(f"/donations/{upload.donation_id}/status.json").get_json()
    assert [item["status"] for item in status["files"]] == ["accepted"] * 4


def test_images_are_recorded_in_batches_with_one_audit_entry_each(
    monkeypatch: pytest.MonkeyPatch, donor: Browser, db_session: Session
) -> None:
    monkeypatch.setattr(archives, "BATCH_FILES", 2)
    Tus(donor).send(zipped(a_cd([slice_of(CT) for _ in range(5)])))
    assert [row.status for row in files(db_session)] == ["accepted"] * 5
    details = [
        entry.detail
        for entry in db_session.scalars(
            select(AuditEntry).where(AuditEntry.action == "donation.uploaded")
        )
    ]
    assert [d["files"] for d in details] == [{"accepted": 2}, {"accepted": 2}, {"accepted": 1}]


def test_an_image_given_before_or_twice_in_the_archive_is_stored_once(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    first = slice_of(CT)
    Tus(donor).send(first)
    again = zipped(a_cd([first, MR, MR]))
    Tus(donor).send(again)
    rows = files(db_session)
    assert [row.status for row in rows] == ["accepted", "duplicate", "accepted", "duplicate"]
    assert len(stored(app)) == 2


def test_a_job_failing_for_good_keeps_the_images_recorded_before(
    monkeypatch: pytest.MonkeyPatch, app: Flask, donor: Browser, db_session: Session
) -> None:
    monkeypatch.setattr(archives, "BATCH_FILES", 2)
    real_store = archives._store_batch
    calls = []

    def broken_after_one_batch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise OSError("no space left on the database volume")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(archives, "_store_batch", broken_after_one_batch)
    url = Tus(donor).send(zipped(a_cd([slice_of(CT) for _ in range(5)])))
    assert upload_row(db_session, url).state == "done"
    rows = files(db_session)
    assert [(row.status, row.reason_code) for row in rows] == [
        ("rejected", "processing_failed"),  # the archive: the donor is told to send it again
        ("accepted", None),
        ("accepted", None),
    ]
    assert stored(app) == {f"{row.object_id}.c4gh" for row in rows[1:]}


def test_a_job_broken_off_between_batches_resumes_without_storing_twice(
    monkeypatch: pytest.MonkeyPatch, app: Flask, donor: Browser, db_session: Session
) -> None:
    monkeypatch.setattr(archives, "BATCH_FILES", 2)
    real_store = archives._store_batch
    calls = []

    def killed_after_one_batch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("INSERT", {}, ConnectionResetError("server closed"))
        return real_store(*args, **kwargs)

    def not_the_last_attempt(upload_id: str) -> None:
        with app.app_context(), pytest.raises(ingest.RetryLater):
            tasks.run_ingest(upload_id, final_attempt=False)

    monkeypatch.setattr(archives, "_store_batch", killed_after_one_batch)
    monkeypatch.setitem(app.extensions, "portal_ingest_runner", not_the_last_attempt)
    url = Tus(donor).send(zipped(a_cd([slice_of(CT) for _ in range(5)])))
    rows = files(db_session)
    assert [row.status for row in rows] == ["processing", "accepted", "accepted"]
    assert upload_row(db_session, url).state == "processing"
    monkeypatch.setattr(archives, "_store_batch", real_store)
    with app.app_context():  # the redelivered message
        assert tasks.run_ingest(url.rsplit("/", 1)[1], final_attempt=False) == "done"
        assert tasks.run_ingest(url.rsplit("/", 1)[1], final_attempt=False) == "done"
    rows = files(db_session)
    assert [row.status for row in rows] == ["accepted"] * 5
    assert sorted(row.member for row in rows) == [5, 6, 7, 8, 9]
    assert stored(app) == {f"{row.object_id}.c4gh" for row in rows}
    assert len(db_session.scalars(select(StoredObject)).all()) == 5


@pytest.mark.parametrize(
    ("archive", "code"),
    [
        (zipped(a_cd([CT]))[:-30], "archive_damaged"),
        (zipped([("notes.txt", b"hello"), ("inner.zip", zipped([("IM1", CT)]))]),
         "archive_without_images"),
        (zipped([]), "archive_without_images"),
    ],
    ids=["truncated", "no-images-and-a-nested-zip", "empty"],
)
def test_an_archive_without_usable_images_gets_one_clear_answer(
    app: Flask, donor: Browser, db_session: Session, archive: bytes, code: str
) -> None:
    url = Tus(donor).send(archive)
    assert upload_row(db_session, url).state == "done"
    (row,) = files(db_session)
    assert (row.status, row.reason_code) == ("rejected", code)
    assert "ZIP" in row.reason
    assert stored(app) == set()


def test_a_damaged_or_locked_entry_is_rejected_and_the_others_kept(
    app: Flask, donor: Browser, db_session: Session
) -> None:
    good, bad = slice_of(CT), slice_of(CT)
    content = bytearray(zipped([("IM1", good), ("IM2", bad), ("IM3", MR)], zipfile.ZIP_STORED))
    # flip one byte of the second image's pixels: its CRC no longer matches
    where = content.index(bad) + len(bad) - 10
    content[where] ^= 0xFF
    out = io.BytesIO(bytes(content))
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr("IM4", slice_of(CT))
    Tus(donor).send(marked_encrypted(out.getvalue(), "IM4"))
    rows = sorted(files(db_session), key=lambda row: row.member or 0)
    assert [(row.status, row.reason_code) for row in rows] == [
        ("accepted", None),
        ("rejected", "archive_entry_damaged"),
        ("accepted", None),
        ("rejected", "archive_entry_encrypted"),
    ]
    assert len(stored(app)) == 2


def test_a_withdrawal_before_a_batch_is_recorded_wins(
    monkeypatch: pytest.MonkeyPatch, app: Flask, donor: Browser, db_session: Session
) -> None:
    real_record = archives._record_batch

    def withdrawn_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        with app.extensions["portal_sessionmaker"]() as other:
            record = other.scalars(select(consents.Consent)).one()
            consents.withdraw_consent(other, record.id, mode=consents.STOP_USE)
            other.commit()
        return real_record(*args, **kwargs)

    monkeypatch.setattr(archives, "_record_batch", withdrawn_meanwhile)
    url = Tus(donor).send(zipped(a_cd([slice_of(CT), MR])))
    assert upload_row(db_session, url).state == "cancelled"
    assert all(row.status != "accepted" for row in files(db_session))
    assert stored(app) == set()


def test_is_archive_looks_at_the_bytes_not_the_name(tmp_path: Path) -> None:
    assert archives.is_archive(io.BytesIO(zipped([("a", b"b")])))
    assert not archives.is_archive(io.BytesIO(CT))
    assert not archives.is_archive(io.BytesIO(b""))


def declared_zip(tus: Tus, content: bytes):  # type: ignore[no-untyped-def]
    """A creation-with-upload that says, as the upload page does, what type of file it is."""
    meta = ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}"
        for key, value in (("submission", tus.submission), ("filetype", "application/zip"))
    )
    headers = tus.headers(
        **{
            "Upload-Length": str(len(content)),
            "Upload-Metadata": meta,
            "Content-Type": "application/offset+octet-stream",
        }
    )
    return tus.client.post("/uploads/", headers=headers, data=content)


def test_a_zip_archive_may_be_larger_than_one_file_but_not_its_images(
    monkeypatch: pytest.MonkeyPatch, app: Flask, donor: Browser, db_session: Session
) -> None:
    assert len(MR) < 20_000 < len(CT)
    monkeypatch.setitem(app.config, "MAX_FILE_BYTES", 20_000)
    archive = zipped(a_cd([MR, CT]))
    assert len(archive) > 20_000
    tus = Tus(donor)
    refused = tus.create(len(archive), body=archive)
    assert refused.status_code == 413
    assert "one file" in refused.get_json()["detail"]
    assert declared_zip(tus, archive).status_code == 201
    rows = files(db_session)
    assert [(row.status, row.reason_code) for row in rows] == [
        ("accepted", None),
        ("rejected", "too_large"),
    ]
    monkeypatch.setitem(app.config, "MAX_ARCHIVE_BYTES", 30_000)
    too_big = declared_zip(Tus(donor), zipped([("IM1", MR), ("IM2", slice_of(CT))]))
    assert too_big.status_code == 413
    assert "one ZIP archive" in too_big.get_json()["detail"]


def test_a_file_declared_a_zip_archive_that_is_not_one_keeps_the_file_limit(
    monkeypatch: pytest.MonkeyPatch, app: Flask, donor: Browser, db_session: Session
) -> None:
    monkeypatch.setitem(app.config, "MAX_FILE_BYTES", 20_000)
    assert declared_zip(Tus(donor), CT).status_code == 201
    (row,) = files(db_session)
    assert (row.status, row.reason_code) == ("rejected", "too_large")
    assert stored(app) == set()
