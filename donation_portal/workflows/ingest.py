"""Ingest of one upload form: de-identify each file, store it encrypted under its consent.

A plain function over a session, with no request inside, so a background worker can run it
later. It flushes; the caller's boundary commits. Objects written before a failure are
deleted again, so a failed ingest leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import anonymize
import consent as consents
from consent import ACTIVE, Consent, NotActive, state
from donation_portal.adapters.models import DonatedFile, Donation, StoredObject
from storage import ObjectInfo, ObjectStore, ObjectWriter

ACCEPTED = "accepted"
NEEDS_REVIEW = "needs_review"
REJECTED = "rejected"
ERASED = "erased"


@dataclass(frozen=True)
class FileOutcome:
    position: int
    size: int
    status: str
    reason_code: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class IngestResult:
    donation: Donation | None
    outcomes: list[FileOutcome]
    repeated: bool = False

    @property
    def accepted(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status != REJECTED)


def find_submission(session: Session, submission_key: str) -> Donation | None:
    query = select(Donation).where(Donation.submission_key == submission_key)
    return session.scalars(query).first()


class SubmissionConflict(Exception):
    """The submission key belongs to another donor's upload (a replayed or forged form)."""


def ingest_upload(
    session: Session,
    *,
    donor_id: int,
    consent: Consent,
    submission_key: str,
    files: Sequence[BinaryIO],
    store: ObjectStore,
    deid_key: bytes,
    max_file_bytes: int,
) -> IngestResult:
    """De-identify and store ``files`` as one donation under ``consent``.

    The submission key is claimed first, so a re-submission of the same form - even one that
    arrives while the first is still being processed - returns the earlier donation instead of
    storing the files twice. When no file can be accepted, the result has no donation and the
    caller rolls the transaction back (releasing the claim).
    """
    if state(session, consent.id) != ACTIVE:
        raise NotActive("Your consent has been withdrawn, so no new files can be donated.")
    donation, earlier = _claim(session, donor_id, consent, submission_key)
    if earlier is not None:
        return IngestResult(earlier, [_outcome_of(f) for f in earlier.files], repeated=True)
    assert donation is not None
    store.ensure_scope(consent.id)
    written: list[ObjectInfo] = []
    try:
        results = [
            _ingest_one(position, stream, consent, store, deid_key, max_file_bytes, written)
            for position, stream in enumerate(files, start=1)
        ]
        outcomes = [outcome for outcome, _, _ in results]
        if not any(outcome.status != REJECTED for outcome in outcomes):
            _delete_all(store, written)
            return IngestResult(None, outcomes)
        for outcome, info, deid in results:
            row = _donated_file(donation, consent, outcome, info, deid)
            if info is not None:
                row.stored_object = _stored_object(info)
            session.add(row)
        session.flush()
        _still_active(session, consent)
        record_upload(session, donation, donor_id, outcomes)
    except BaseException:
        _delete_all(store, written)
        raise
    return IngestResult(donation, outcomes)


def _still_active(session: Session, consent: Consent) -> None:
    """Lock the consent row and check it again, just before the caller commits.

    Processing takes a while; a withdrawal committed meanwhile must win. The lock (``FOR
    UPDATE`` on PostgreSQL; SQLite serialises writers anyway) orders this upload against a
    withdrawal, which locks the same row: either this check sees the withdrawal and the
    upload is refused, or the withdrawal waits for this commit and then sees the files.
    """
    session.execute(select(Consent.id).where(Consent.id == consent.id).with_for_update()).all()
    if state(session, consent.id) != ACTIVE:
        raise NotActive("Your consent has been withdrawn, so no new files can be donated.")


def record_upload(
    session: Session, donation: Donation, donor_id: int, outcomes: list[FileOutcome]
) -> None:
    """Audit the upload with counts only: no file names, no header values."""
    counts = {status: 0 for status in (ACCEPTED, NEEDS_REVIEW, REJECTED)}
    for outcome in outcomes:
        counts[outcome.status] += 1
    consents.audit.record(
        session,
        "donation.uploaded",
        actor=f"user:{donor_id}",
        subject_type="donation",
        subject_id=donation.id,
        detail={"consent_id": donation.consent_id, "files": counts},
    )


def _claim(
    session: Session, donor_id: int, consent: Consent, submission_key: str
) -> tuple[Donation | None, Donation | None]:
    """Insert the donation row for ``submission_key``, or return the one already there.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction and
    then fails the unique constraint; the SAVEPOINT keeps this transaction usable.
    """
    earlier = find_submission(session, submission_key)
    if earlier is None:
        donation = Donation(
            id=secrets.token_urlsafe(16),
            donor_id=donor_id,
            consent_id=consent.id,
            submission_key=submission_key,
        )
        try:
            with session.begin_nested():
                session.add(donation)
                session.flush()
            return donation, None
        except IntegrityError:
            earlier = find_submission(session, submission_key)
            if earlier is None:
                raise
    if earlier.donor_id != donor_id:
        raise SubmissionConflict("submission key in use by another donor")
    return None, earlier


def _ingest_one(
    position: int,
    stream: BinaryIO,
    consent: Consent,
    store: ObjectStore,
    deid_key: bytes,
    max_file_bytes: int,
    written: list[ObjectInfo],
) -> tuple[FileOutcome, ObjectInfo | None, anonymize.Outcome | None]:
    size = _size_of(stream)
    if size == 0:
        return FileOutcome(position, 0, REJECTED, "empty", "The file is empty."), None, None
    if size > max_file_bytes:
        limit = f"{max_file_bytes / 2**20:.0f} MiB"
        reason = f"The file is larger than the {limit} limit for one file."
        return FileOutcome(position, size, REJECTED, "too_large", reason), None, None
    with store.writer(consent.id) as writer:
        deid = anonymize.deidentify(
            stream, _AppendOnly(writer), key=deid_key, pseudonym=consent.pseudonym
        )
        if deid.verdict == anonymize.Verdict.REJECTED:
            writer.abort()
            outcome = FileOutcome(position, size, REJECTED, deid.reason_code, deid.reason)
            return outcome, None, deid
        info = writer.commit()
    written.append(info)
    status = ACCEPTED if deid.verdict == anonymize.Verdict.DEIDENTIFIED else NEEDS_REVIEW
    return FileOutcome(position, size, status, deid.reason_code, deid.reason), info, deid


class _AppendOnly(io.RawIOBase):
    """A write-only file over an object writer: pydicom asks ``tell()``, it never seeks back."""

    def __init__(self, writer: ObjectWriter) -> None:
        super().__init__()
        self._writer = writer
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._writer.write(data)
        self._position += count
        return count

    def tell(self) -> int:
        return self._position


def _size_of(stream: BinaryIO) -> int:
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def _delete_all(store: ObjectStore, written: list[ObjectInfo]) -> None:
    for info in written:
        store.delete(info.object_id)


def _stored_object(info: ObjectInfo) -> StoredObject:
    return StoredObject(**dataclasses.asdict(info))


def _donated_file(
    donation: Donation,
    consent: Consent,
    outcome: FileOutcome,
    info: ObjectInfo | None,
    deid: anonymize.Outcome | None,
) -> DonatedFile:
    return DonatedFile(
        donation_id=donation.id,
        consent_id=consent.id,
        position=outcome.position,
        size=outcome.size,
        status=outcome.status,
        reason_code=outcome.reason_code,
        reason=outcome.reason,
        object_id=info.object_id if info else None,
        sop_class_uid=deid.sop_class_uid if deid else None,
        modality=deid.modality if deid else None,
        study_instance_uid=deid.study_instance_uid if deid else None,
        series_instance_uid=deid.series_instance_uid if deid else None,
        sop_instance_uid=deid.sop_instance_uid if deid else None,
        body_part=deid.body_part if deid else None,
        patient_sex=deid.patient_sex if deid else None,
        patient_age_years=deid.patient_age_years if deid else None,
        study_year=deid.study_year if deid else None,
    )


def _outcome_of(row: DonatedFile) -> FileOutcome:
    return FileOutcome(row.position, row.size, row.status, row.reason_code, row.reason)
