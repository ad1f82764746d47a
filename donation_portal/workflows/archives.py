"""The ingest job for an uploaded ZIP archive: a hospital CD sent as one file.

Every DICOM file inside becomes a donated file of its own (accepted, held, rejected or already
donated), each de-identified into its own object of the consent's key scope. What is not a
DICOM file (the viewer program, ``DICOMDIR``, reports as PDF) is left out and counted.

The images are recorded in batches: one transaction, one donation-row lock and one audit entry
per batch of up to ``BATCH_FILES`` files, under the same locks as a single file (consent row,
then upload row), so a withdrawal committed meanwhile wins and the batch's objects are deleted.
Each recorded file remembers its index in the archive (``DonatedFile.member``): a redelivered
job skips what is recorded and goes on with the rest, so nothing is stored twice. Objects of a
batch that a killed worker never recorded are orphans, which the reconciler removes.

Archives are safe to open: sizes are bounded by the entries' declared sizes (``zipfile`` never
inflates past them and checks each CRC), the entry count is bounded, nested archives are not
opened, and nothing is ever written to disk in plaintext.
"""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

import anonymize
import consent
from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import (
    FILE_CANCELLED,
    FILE_DUPLICATE,
    FILE_REJECTED,
    UPLOAD_CANCELLED,
    UPLOAD_DONE,
    UPLOAD_PROCESSING,
    DonatedFile,
    StoredObject,
    Upload,
    object_columns,
)
from donation_portal.workflows import uploads
from donation_portal.workflows.deidentified import (
    DUPLICATE_REASON,
    Claim,
    StoreFor,
    audit_uploaded,
    deidentify_to_object,
    delete_objects,
    described,
    donated_before,
    fingerprint,
    kept_status,
    rejection,
    too_large,
)
from storage import Backend, ObjectInfo

log = logging.getLogger(__name__)

BATCH_FILES = 32
BATCH_BYTES = 64 * 2**20
MAX_ENTRIES = 100_000
IN_MEMORY_BYTES = 64 * 2**20  # an image up to this size is inflated into memory first
_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_LEFT_OUT_NAMES = frozenset({"DICOMDIR", "THUMBS.DB", "DESKTOP.INI"})

DAMAGED = (
    "archive_damaged",
    "This ZIP archive is damaged or incomplete, so we could not open it. Please make it "
    "again and send it again.",
)
NO_IMAGES = (
    "archive_without_images",
    "This ZIP archive holds no DICOM images. On a hospital CD they are usually in a folder "
    "called DICOM; please send that folder, or a ZIP archive of it.",
)
TOO_MANY = (
    "archive_too_many_entries",
    f"This ZIP archive holds more than {MAX_ENTRIES} entries. Please split it into smaller "
    "archives.",
)
ENTRY_DAMAGED = (
    "archive_entry_damaged",
    "This file in your ZIP archive is damaged (it does not match the archive's checksum). "
    "Please make the archive again.",
)
ENTRY_LOCKED = (
    "archive_entry_encrypted",
    "This file in your ZIP archive is protected by a password, so we cannot read it. Please "
    "make the archive without a password.",
)
ENTRY_UNSUPPORTED = (
    "archive_entry_unsupported",
    "This file in your ZIP archive is compressed in a way we cannot read. Please make the "
    "archive with your computer's own ZIP function.",
)


def is_archive(source: BinaryIO) -> bool:
    """Whether the stream is a ZIP archive (by its first bytes, never by a file name)."""
    head = source.read(4)
    source.seek(0)
    return head in _SIGNATURES


@dataclass(frozen=True)
class _Image:
    member: int
    size: int
    outcome: anonymize.Outcome
    info: ObjectInfo | None  # None: rejected, nothing stored


def ingest_archive(
    session_factory: sessionmaker[Session],
    store_for: StoreFor,
    backend: Backend,
    deid_key: bytes,
    upload_id: str,
    claim: Claim,
    source: BinaryIO,
    *,
    max_entry_bytes: int,
) -> str:
    """De-identify and record every image of the archive; returns the upload's state."""
    with source:
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, EOFError, ValueError):
            return _finish(session_factory, store_for, upload_id, claim, DAMAGED, 0)
        entries = archive.infolist()
        if len(entries) > MAX_ENTRIES:
            return _finish(session_factory, store_for, upload_id, claim, TOO_MANY, 0)
        done = _recorded_members(session_factory, upload_id)
        left_out = 0
        batch: list[_Image] = []
        for member, entry in _candidates(entries, done):
            image = _deidentify_entry(
                archive, entry, member, backend, deid_key, claim, max_entry_bytes
            )
            if image is None:
                left_out += 1
                continue
            batch.append(image)
            if len(batch) >= BATCH_FILES or sum(i.size for i in batch) >= BATCH_BYTES:
                state = _record_batch(session_factory, store_for, deid_key, upload_id, claim, batch)
                if state != UPLOAD_PROCESSING:
                    return state
                batch = []
        if batch:
            state = _record_batch(session_factory, store_for, deid_key, upload_id, claim, batch)
            if state != UPLOAD_PROCESSING:
                return state
    return _finish(session_factory, store_for, upload_id, claim, NO_IMAGES, left_out)


def _candidates(
    entries: list[zipfile.ZipInfo], done: set[int]
) -> Iterator[tuple[int, zipfile.ZipInfo]]:
    """The entries that may be images and are not recorded yet, with their 1-based index."""
    for member, entry in enumerate(entries, start=1):
        if member in done or entry.is_dir():
            continue
        parts = entry.filename.replace("\\", "/").split("/")
        name = parts[-1]
        if "__MACOSX" in parts or name.startswith(".") or name.upper() in _LEFT_OUT_NAMES:
            continue
        yield member, entry


def _deidentify_entry(
    archive: zipfile.ZipFile,
    entry: zipfile.ZipInfo,
    member: int,
    backend: Backend,
    deid_key: bytes,
    claim: Claim,
    max_entry_bytes: int,
) -> _Image | None:
    """One entry into its own object; None when it is not a DICOM file (left out)."""
    if entry.flag_bits & 0x1:
        return _rejected(member, entry.file_size, ENTRY_LOCKED)
    if entry.file_size > max_entry_bytes:
        return _Image(member, entry.file_size, too_large(max_entry_bytes), None)
    try:
        with archive.open(entry) as stream:
            head = stream.read(132)
            if len(head) < 132 or head[128:132] != b"DICM":
                return None
            stream.seek(0)
            if entry.file_size <= IN_MEMORY_BYTES:  # pydicom's many small reads, from memory
                stream = io.BytesIO(stream.read())
            # ZipFile.open's IO[bytes] is a binary file; typeshed's BinaryIO is nominal
            outcome, info = deidentify_to_object(backend, claim, cast(BinaryIO, stream), deid_key)
            return _Image(member, entry.file_size, outcome, info)
    except (zipfile.BadZipFile, zlib.error, EOFError):
        return _rejected(member, entry.file_size, ENTRY_DAMAGED)
    except NotImplementedError:
        return _rejected(member, entry.file_size, ENTRY_UNSUPPORTED)


def _rejected(member: int, size: int, why: tuple[str, str]) -> _Image:
    return _Image(member, size, rejection(*why), None)


def _recorded_members(session_factory: sessionmaker[Session], upload_id: str) -> set[int]:
    with session_factory() as session:
        rows = session.scalars(
            select(DonatedFile.member).where(
                DonatedFile.upload_id == upload_id, DonatedFile.member.is_not(None)
            )
        )
        return {int(member) for member in rows if member is not None}


def _record_batch(
    session_factory: sessionmaker[Session],
    store_for: StoreFor,
    deid_key: bytes,
    upload_id: str,
    claim: Claim,
    batch: list[_Image],
) -> str:
    """One transaction for the batch; returns the upload's state (processing: go on)."""
    written = [image.info.object_id for image in batch if image.info is not None]
    discard = written
    try:
        with session_factory() as session:
            begin_write(session)
            upload = uploads.lock_upload(session, upload_id, claim.consent_id)
            state = upload.state
            if state != UPLOAD_PROCESSING:
                session.rollback()
            elif consent.state(session, claim.consent_id) != consent.ACTIVE:
                discard = _cancel(session, upload, claim) + written
                state = UPLOAD_CANCELLED
                session.commit()
            else:
                discard = _store_batch(session, upload, claim, batch, deid_key)
                upload.updated_at = utcnow()
                session.commit()
    except BaseException:
        delete_objects(store_for, session_factory, written)
        raise
    delete_objects(store_for, session_factory, discard)
    return state


def _store_batch(
    session: Session, upload: Upload, claim: Claim, batch: list[_Image], deid_key: bytes
) -> list[str]:
    """Rows for the batch's images, inserted in bulk (two statements, not one per file);
    returns the objects not kept (duplicates)."""
    prints = {
        image.member: fingerprint(deid_key, claim.donor_id, image.outcome.sop_instance_uid)
        for image in batch
        if image.info is not None
    }
    given = donated_before(session, claim.donor_id, [p for p in prints.values() if p])
    first = uploads.next_position(session, upload.donation_id)
    objects: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    discard: list[str] = []
    for offset, image in enumerate(batch):
        print_ = prints.get(image.member)
        row = {
            "donation_id": upload.donation_id,
            "consent_id": upload.consent_id,
            "upload_id": upload.id,
            "position": first + offset,
            "member": image.member,
            "size": image.size,
            "object_id": None,
            "fingerprint": None,
        }
        if image.info is None:
            row |= described(image.outcome, FILE_REJECTED)
        elif print_ is not None and print_ in given:
            row |= described(image.outcome, FILE_DUPLICATE)
            row |= {"reason_code": "already_donated", "reason": DUPLICATE_REASON}
            discard.append(image.info.object_id)
        else:
            objects.append(object_columns(image.info))
            row |= described(image.outcome, kept_status(image.outcome))
            row |= {"object_id": image.info.object_id, "fingerprint": print_}
            if print_ is not None:
                given.add(print_)  # the same image twice in one archive is kept once
        rows.append(row)
    if objects:
        session.execute(insert(StoredObject), objects)
    session.execute(insert(DonatedFile), rows)
    statuses = Counter(row["status"] for row in rows)
    audit_uploaded(session, upload, {"files": dict(sorted(statuses.items()))})
    return discard


def _waiting_row(session: Session, upload_id: str) -> DonatedFile | None:
    """The archive's own row: the donor sees it while the archive is sent and processed; it
    goes when the images are recorded, or says why there were none."""
    return session.scalars(
        select(DonatedFile).where(DonatedFile.upload_id == upload_id, DonatedFile.member.is_(None))
    ).first()


def _recorded_any(session: Session, upload_id: str) -> bool:
    found = session.scalar(
        select(DonatedFile.id)
        .where(DonatedFile.upload_id == upload_id, DonatedFile.member.is_not(None))
        .limit(1)
    )
    return found is not None


def _cancel(session: Session, upload: Upload, claim: Claim) -> list[str]:
    upload.state = UPLOAD_CANCELLED
    upload.updated_at = utcnow()
    waiting = _waiting_row(session, upload.id)
    if waiting is not None:
        waiting.status, waiting.reason_code, waiting.reason = FILE_CANCELLED, "withdrawn", None
    return uploads.release_quarantine(session, upload, [p.object_id for p in claim.parts])


def _finish(
    session_factory: sessionmaker[Session],
    store_for: StoreFor,
    upload_id: str,
    claim: Claim,
    empty: tuple[str, str],
    left_out: int,
) -> str:
    """Close the upload: its quarantine goes; if no image was found, its row says why."""
    with session_factory() as session:
        begin_write(session)
        upload = uploads.lock_upload(session, upload_id, claim.consent_id)
        if upload.state != UPLOAD_PROCESSING:
            return upload.state
        if consent.state(session, claim.consent_id) != consent.ACTIVE:
            parts = _cancel(session, upload, claim)
        else:
            waiting = _waiting_row(session, upload.id)
            if waiting is not None and _recorded_any(session, upload.id):
                session.delete(waiting)
            elif waiting is not None:
                waiting.status, waiting.reason_code, waiting.reason = FILE_REJECTED, *empty
            parts = uploads.release_quarantine(session, upload, [p.object_id for p in claim.parts])
            upload.state = UPLOAD_DONE
            upload.updated_at = utcnow()
        state = upload.state
        session.commit()
    if left_out:
        log.info("archive upload %s: %d entries were not DICOM files", upload_id, left_out)
    delete_objects(store_for, session_factory, parts)
    return state
