"""Receiving files: what tus uploads and the plain form share, and how uploads end.

Bytes are encrypted as they arrive, to a quarantine key scope of the upload's own, and kept as
*parts*: one object per request body (or per piece that arrived before a connection broke).
Use cases: ``resumable_uploads`` (tus), ``whole_files`` (the form, and a tus creation that
carries the whole file); here the checks, the donation a batch belongs to, the hand-over to
the ingest job, and the ends of an upload (terminated, expired, cancelled by a withdrawal).

Lock order, shared with withdrawal and the ingest job: the consent row, then the upload row.
"""


from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import consent
from consent.canonical import as_utc
from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.jobs import JobQueue, ingest_after_commit
from donation_portal.adapters.keystore import DatabaseKeyStore
from donation_portal.adapters.models import (
    FILE_CANCELLED,
    FILE_PENDING_STATES,
    FILE_WAITING,
    UPLOAD_CANCELLED,
    UPLOAD_EXPIRED,
    UPLOAD_LIVE_STATES,
    UPLOAD_QUEUED,
    UPLOAD_RECEIVING,
    UPLOAD_TERMINATED,
    DonatedFile,
    Donation,
    Upload,
    UploadPart,
    object_columns,
)
from storage import (
    ObjectInfo,
    ObjectStore,
    StorageError,
)

log = logging.getLogger(__name__)
CHECKSUM_ALGORITHMS = ("sha256", "sha1")


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_bytes_in_flight: int
    max_files_per_day: int
    expiry_seconds: int
    max_archive_bytes: int = 0
    unit: str = "one file"  # what max_file_bytes is the limit of, in the donor's words

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> UploadLimits:
        return cls(
            max_file_bytes=int(settings["MAX_FILE_BYTES"]),
            max_bytes_in_flight=int(settings["UPLOAD_MAX_BYTES_IN_FLIGHT"]),
            max_files_per_day=int(settings["UPLOAD_MAX_FILES_PER_DAY"]),
            expiry_seconds=int(settings["UPLOAD_EXPIRY"]),
            max_archive_bytes=int(settings["MAX_ARCHIVE_BYTES"]),
        )

    def for_archive(self) -> UploadLimits:
        """The limits of an upload the client declares a ZIP archive (a whole CD). The
        ingest job checks the claim: content that is not an archive is held to
        ``max_file_bytes`` there, and so is every image inside one."""
        return replace(self, max_file_bytes=self.max_archive_bytes, unit="one ZIP archive")


class UploadError(Exception):
    """An upload request was refused; the message is safe to show to the donor."""


class UploadNotFound(UploadError):
    """No such upload for this donor (another donor's upload is 'not found' too)."""


class UploadGone(UploadError):
    """The upload expired, was cancelled by a withdrawal, or was terminated."""


class OffsetMismatch(UploadError):
    """The client's offset is not the server's durable offset."""


class ChecksumMismatch(UploadError):
    """The body does not match its Upload-Checksum; nothing of it was kept."""


class TooLarge(UploadError):
    """The file, or the body, is larger than allowed or declared."""


class LimitReached(UploadError):
    """A per-donor limit (bytes in flight, files per day) is reached for now."""


class AlreadySubmitted(UploadError):
    """The upload is complete and handed to processing; it can no longer be terminated."""


class SubmissionConflict(UploadError):
    """The submission key belongs to another donor's donation (a replayed or forged form)."""


class BodyInterrupted(Exception):
    """The web layer's signal that the client went away mid-body."""


def check_new_file(
    session: Session, donor_id: int, active: consent.Consent, length: int, limits: UploadLimits
) -> None:
    """Before a whole file is received: may this donor send ``length`` bytes now? Ends the
    read transaction. ``active`` was just found active; the consent is checked again when
    the file is recorded, and once more, under lock, by the ingest job."""
    try:
        check_length(length, limits)
        check_limits(session, donor_id, length, limits)
    finally:
        end_read(session)


def end_read(session: Session) -> None:
    """End a read-only transaction before a body is received. Nothing was written, so a
    rollback loses nothing, and unlike a commit it cannot hide the error of a failed query
    (a dropped connection) behind its own."""
    session.rollback()


def check_length(length: int, limits: UploadLimits) -> None:
    if length <= 0:
        raise TooLarge("The file is empty.")
    if length > limits.max_file_bytes:
        limit = f"{limits.max_file_bytes / 2**20:.0f} MiB"
        raise TooLarge(f"The file is larger than the {limit} limit for {limits.unit}.")


def check_active(session: Session, consent_id: str) -> None:
    if consent.state(session, consent_id) != consent.ACTIVE:
        raise UploadGone("Your consent is no longer active, so no files can be donated.")


def check_limits(session: Session, donor_id: int, length: int, limits: UploadLimits) -> None:
    in_flight = session.scalar(
        select(func.coalesce(func.sum(Upload.length - Upload.offset), 0)).where(
            Upload.donor_id == donor_id, Upload.state == UPLOAD_RECEIVING
        )
    )
    if int(in_flight or 0) + length > limits.max_bytes_in_flight:
        raise LimitReached(
            "You have many unfinished uploads. Please let them finish, then add more files."
        )
    since = utcnow() - timedelta(days=1)
    today = session.scalar(
        select(func.count(Upload.id)).where(
            Upload.donor_id == donor_id, Upload.created_at >= since
        )
    )
    if int(today or 0) >= limits.max_files_per_day:
        raise LimitReached(
            "You have sent the largest number of files we accept in one day. "
            "Please continue tomorrow."
        )


def claim_donation(
    session: Session, donor_id: int, active: consent.Consent, submission_key: str
) -> Donation:
    """The donation for ``submission_key``, created on first use (a retried request or a
    second file of the same batch finds it). Another donor's key is refused."""
    found = _donation_by_key(session, submission_key)
    if found is None:
        donation = Donation(
            id=secrets.token_urlsafe(16),
            donor_id=donor_id,
            consent_id=active.id,
            submission_key=submission_key,
        )
        try:
            with session.begin_nested():
                session.add(donation)
                session.flush()
            return donation
        except IntegrityError:
            found = _donation_by_key(session, submission_key)
            if found is None:
                raise
    if found.donor_id != donor_id or found.consent_id != active.id:
        raise SubmissionConflict("This upload form has expired. Please choose your files again.")
    return found


def _donation_by_key(session: Session, submission_key: str) -> Donation | None:
    query = select(Donation).where(Donation.submission_key == submission_key)
    return session.scalars(query).first()


def new_upload(
    donor_id: int, donation: Donation, scope_id: str, length: int, offset: int, limits: UploadLimits
) -> Upload:
    """An upload of ``donation`` (and so of its consent) still receiving, until handed over."""
    return Upload(
        id=secrets.token_urlsafe(16),
        donor_id=donor_id,
        consent_id=donation.consent_id,
        donation_id=donation.id,
        scope_id=scope_id,
        length=length,
        offset=offset,
        state=UPLOAD_RECEIVING,
        attempts=0,
        expires_at=utcnow() + timedelta(seconds=limits.expiry_seconds),
    )


def find_upload(session: Session, upload_id: str, donor_id: int) -> Upload:
    upload = session.get(Upload, upload_id) if isinstance(upload_id, str) else None
    if upload is None or upload.donor_id != donor_id:
        raise UploadNotFound("This upload does not exist.")
    return upload


def check_open(upload: Upload) -> None:
    """Refuse an upload that can take no more bytes because it is over (not merely complete)."""
    if upload.state in (UPLOAD_TERMINATED, UPLOAD_EXPIRED, UPLOAD_CANCELLED):
        raise UploadGone(GONE[upload.state])
    if upload.state == UPLOAD_RECEIVING and as_utc(upload.expires_at) <= utcnow():
        raise UploadGone(GONE[UPLOAD_EXPIRED])


GONE = {
    UPLOAD_TERMINATED: "This upload was cancelled.",
    UPLOAD_EXPIRED: "This upload was not finished in time. Please send the file again.",
    UPLOAD_CANCELLED: "Your consent was withdrawn, so this file is not being donated.",
}


def lock_upload(session: Session, upload_id: str, consent_id: str) -> Upload:
    """Lock the consent row, then the row of its upload (the documented lock order)."""
    session.execute(
        select(consent.Consent.id).where(consent.Consent.id == consent_id).with_for_update()
    ).all()
    upload = session.scalars(
        select(Upload).where(Upload.id == upload_id).with_for_update().execution_options(
            populate_existing=True
        )
    ).one()
    return upload


def part_row(upload_id: str, offset: int, info: ObjectInfo) -> UploadPart:
    return UploadPart(upload_id=upload_id, offset=offset, **object_columns(info))


def hand_over(session: Session, upload: Upload, queue: JobQueue) -> None:
    """The upload is complete: the donor sees a waiting file, and a job is queued.

    The donation row lock keeps the files' positions distinct when several of a batch finish
    at once."""
    upload.state = UPLOAD_QUEUED  # before any query flushes the row: one INSERT, no UPDATE
    session.add(
        DonatedFile(
            donation_id=upload.donation_id,
            consent_id=upload.consent_id,
            position=next_position(session, upload.donation_id),
            size=upload.length,
            status=FILE_WAITING,
            upload_id=upload.id,
        )
    )
    session.flush()
    ingest_after_commit(session, queue, [upload.id])


def next_position(session: Session, donation_id: str) -> int:
    """The first free file position at the end of the donation, under the donation row's
    lock (which keeps the positions of concurrent writers distinct)."""
    session.execute(select(Donation.id).where(Donation.id == donation_id).with_for_update()).all()
    last = session.scalar(
        select(func.coalesce(func.max(DonatedFile.position), 0)).where(
            DonatedFile.donation_id == donation_id
        )
    )
    return int(last or 0) + 1


def expire_uploads(session: Session, store: ObjectStore) -> int:
    """Destroy unfinished uploads past their expiry (scheduled); commits; returns how many."""
    begin_write(session)
    stale = session.scalars(
        select(Upload).where(Upload.state == UPLOAD_RECEIVING, Upload.expires_at < utcnow())
    ).all()
    objects: list[str] = []
    for upload in stale:
        objects += end_upload(session, upload, UPLOAD_EXPIRED)
    session.commit()
    delete_quietly(store, objects)
    return len(stale)


def cancel_for_consents(session: Session, consent_ids: Iterable[str]) -> list[str]:
    """A withdrawal cancels every upload not yet stored, inside the withdrawal's transaction.

    The caller holds the consent row locks; it deletes the returned part objects after its
    commit. Quarantine keys are destroyed here, so the parts are unreadable from the commit.
    """
    ids = list(consent_ids)
    if not ids:
        return []
    live = session.scalars(
        select(Upload)
        .where(Upload.consent_id.in_(ids), Upload.state.in_(UPLOAD_LIVE_STATES))
        .with_for_update()
    ).all()
    objects: list[str] = []
    for upload in live:
        objects += end_upload(session, upload, UPLOAD_CANCELLED)
    return objects


def end_upload(session: Session, upload: Upload, state: str) -> list[str]:
    """Put ``upload`` in a final ``state``: key destroyed, part rows gone, file cancelled."""
    objects = release_quarantine(session, upload)
    upload.state = state
    upload.updated_at = utcnow()
    pending = session.scalars(
        select(DonatedFile).where(
            DonatedFile.upload_id == upload.id, DonatedFile.status.in_(FILE_PENDING_STATES)
        )
    ).all()
    for row in pending:
        row.status = FILE_CANCELLED
        row.reason_code = "withdrawn" if state == UPLOAD_CANCELLED else state
        row.reason = GONE.get(state)
    return objects


def release_quarantine(
    session: Session, upload: Upload, parts: list[str] | None = None
) -> list[str]:
    """Destroy the upload's quarantine key and part rows; returns the part objects, which the
    caller deletes after its commit (``parts``: their IDs, when the caller holds them)."""
    if parts is None:
        parts = [part.object_id for part in upload.parts]
    DatabaseKeyStore(session).destroy(upload.scope_id)
    session.execute(delete(UploadPart).where(UploadPart.upload_id == upload.id))
    session.expire(upload, ["parts"])
    return parts


def delete_quietly(store: ObjectStore, object_ids: Iterable[str]) -> None:
    """Delete objects after the fact; a failure is logged and left to the reconciler."""
    for object_id in object_ids:
        try:
            store.delete(object_id)
        except StorageError:
            log.warning("could not delete object %s; the reconciler will", object_id)
