"""The ingest job: de-identify one received upload, store it under its consent, record it.

Runs on a worker (or inline in tests), at least once per upload: a redelivered or duplicated
job never stores twice, because the upload row says where the work is and the final step
re-checks it under lock. Three short units of work, none open while de-identifying:

1. claim: the upload moves from queued to processing (a finished upload is left alone);
2. de-identify the decrypted parts into a new object of the consent's key scope;
3. record, under the locks of the consent row and then the upload row (the order every
   writer here uses): a withdrawal committed meanwhile wins, and the new object is deleted;
   an image the donor gave before is not stored again.

Transient failures (database or storage unavailable, storage full) raise :class:`RetryLater`;
on the final attempt the file ends as rejected with a reason the donor can read.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

import anonymize
import consent
from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.jobs import JobQueue
from donation_portal.adapters.models import (
    FILE_ACCEPTED,
    FILE_CANCELLED,
    FILE_DUPLICATE,
    FILE_ERASED,
    FILE_NEEDS_REVIEW,
    FILE_PROCESSING,
    FILE_REJECTED,
    UPLOAD_CANCELLED,
    UPLOAD_DONE,
    UPLOAD_PROCESSING,
    UPLOAD_QUEUED,
    DonatedFile,
    Donation,
    StoredObject,
    Upload,
    object_columns,
    stored_info,
)
from donation_portal.workflows import uploads
from storage import (
    KeyUnavailable,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectWriter,
    StorageFull,
    StorageUnavailable,
)
from storage.concat import ConcatenatedReader

log = logging.getLogger(__name__)

# kept for the modules that name file states through this one
ACCEPTED = FILE_ACCEPTED
NEEDS_REVIEW = FILE_NEEDS_REVIEW
REJECTED = FILE_REJECTED
ERASED = FILE_ERASED

StoreFor = Callable[[Session], ObjectStore]
_FAILED_REASON = (
    "We could not process this file because of a problem on our side. It was not stored; "
    "please send it again later."
)
_DUPLICATE_REASON = "You donated this image before; it is kept once."


class RetryLater(Exception):
    """A transient failure: run the job again later (with back-off)."""


@dataclass(frozen=True)
class _Claim:
    consent_id: str
    donor_id: int
    pseudonym: str
    parts: list[ObjectInfo]


def run_ingest_job(
    session_factory: sessionmaker[Session],
    store_for: StoreFor,
    deid_key: bytes,
    upload_id: str,
    *,
    final_attempt: bool,
) -> str:
    """Process upload ``upload_id`` once; returns the upload's state afterwards."""
    try:
        work = _claim(session_factory, store_for, upload_id)
        if work is None:
            return _state_of(session_factory, upload_id)
        claim, source, writer = work
        produced = _deidentify(deid_key, claim, source, writer)
        return _record(session_factory, store_for, deid_key, upload_id, claim, produced)
    except (OperationalError, DBAPIError, StorageUnavailable, StorageFull) as error:
        if not final_attempt:
            raise RetryLater(type(error).__name__) from error
        log.warning("ingest of upload %s failed for good: %s", upload_id, type(error).__name__)
        return _fail(session_factory, store_for, upload_id)
    except (KeyUnavailable, ObjectNotFound):
        # the quarantine key or a part was destroyed: withdrawn, expired or already done
        return _state_of(session_factory, upload_id)
    except Exception as error:  # a bug, or a fault nobody foresaw: retried, then reported
        if not final_attempt:
            raise RetryLater(type(error).__name__) from error
        log.exception("ingest of upload %s failed for good", upload_id)
        return _fail(session_factory, store_for, upload_id)


def _claim(
    session_factory: sessionmaker[Session], store_for: StoreFor, upload_id: str
) -> tuple[_Claim, ConcatenatedReader, ObjectWriter] | None:
    """Mark the upload as processing and open what de-identifying needs, in one transaction:
    the decrypting readers of its parts and a writer to the consent's key scope."""
    with session_factory() as session:
        begin_write(session)
        upload = session.scalars(
            select(Upload).where(Upload.id == upload_id).with_for_update()
        ).first()
        if upload is None or upload.state not in (UPLOAD_QUEUED, UPLOAD_PROCESSING):
            return None  # done, or cancelled by a withdrawal (which checks it under lock)
        upload.state = UPLOAD_PROCESSING
        upload.attempts += 1
        upload.updated_at = utcnow()
        for row in _files_of(session, upload.id):
            row.status = FILE_PROCESSING
        record = session.get(consent.Consent, upload.consent_id)
        assert record is not None
        claim = _Claim(
            consent_id=record.id,
            donor_id=upload.donor_id,
            pseudonym=record.pseudonym,
            parts=[stored_info(part) for part in upload.parts],
        )
        store = store_for(session)
        public_key = store.ensure_scope(record.id)
        readers: list[BinaryIO] = []
        try:
            for part in claim.parts:
                readers.append(store.open(part))
            writer = ObjectWriter(store.backend, claim.consent_id, public_key)
            session.commit()
        except BaseException:
            for reader in readers:
                reader.close()
            raise
    return claim, ConcatenatedReader(readers, [part.size for part in claim.parts]), writer


@dataclass(frozen=True)
class _Produced:
    outcome: anonymize.Outcome
    info: ObjectInfo | None


def _deidentify(
    deid_key: bytes, claim: _Claim, source: ConcatenatedReader, writer: ObjectWriter
) -> _Produced:
    """No transaction is open here: this is the long part."""
    try:
        outcome = anonymize.deidentify(
            source, _AppendOnly(writer), key=deid_key, pseudonym=claim.pseudonym
        )
        if outcome.verdict == anonymize.Verdict.REJECTED:
            writer.abort()
            return _Produced(outcome, None)
        return _Produced(outcome, writer.commit())
    except BaseException:
        writer.abort()
        raise
    finally:
        source.close()


def _record(
    session_factory: sessionmaker[Session],
    store_for: StoreFor,
    deid_key: bytes,
    upload_id: str,
    claim: _Claim,
    produced: _Produced,
) -> str:
    info = produced.info
    try:
        with session_factory() as session:
            begin_write(session)
            upload = uploads.lock_upload(session, upload_id, claim.consent_id)
            if upload.state != UPLOAD_PROCESSING:
                session.rollback()
                _discard(store_for, session_factory, info)
                return upload.state
            if consent.state(session, claim.consent_id) != consent.ACTIVE:
                upload.state = UPLOAD_CANCELLED
                _finish_files(session, upload.id, FILE_CANCELLED, "withdrawn", None)
                keep = None
            else:
                keep = _store_outcome(session, upload, claim, produced, deid_key)
            parts = uploads.release_quarantine(session, upload, [p.object_id for p in claim.parts])
            if upload.state == UPLOAD_PROCESSING:
                upload.state = UPLOAD_DONE
            upload.updated_at = utcnow()
            state = upload.state
            session.commit()
    except BaseException:
        _discard(store_for, session_factory, info)
        raise
    if info is not None and keep is None:
        _discard(store_for, session_factory, info)
    _delete_parts(store_for, session_factory, parts)
    return state


def _store_outcome(
    session: Session, upload: Upload, claim: _Claim, produced: _Produced, deid_key: bytes
) -> ObjectInfo | None:
    """Fill in the file's row; returns the object kept, or None (rejected or duplicate)."""
    outcome, info = produced.outcome, produced.info
    rows = _files_of(session, upload.id)
    if info is None:
        for row in rows:
            _describe(row, outcome, FILE_REJECTED)
        return None
    fingerprint = _fingerprint(deid_key, claim.donor_id, outcome.sop_instance_uid)
    if fingerprint is not None and _donated_before(session, claim.donor_id, fingerprint):
        for row in rows:
            _describe(row, outcome, FILE_DUPLICATE)
            row.reason_code, row.reason = "already_donated", _DUPLICATE_REASON
        return None
    status = (
        FILE_ACCEPTED if outcome.verdict == anonymize.Verdict.DEIDENTIFIED else FILE_NEEDS_REVIEW
    )
    session.add(StoredObject(**object_columns(info)))
    session.flush()
    for row in rows:
        _describe(row, outcome, status)
        row.object_id = info.object_id
        row.fingerprint = fingerprint
    consent.audit.record(
        session,
        "donation.uploaded",
        actor="system:ingest",
        subject_type="donation",
        subject_id=upload.donation_id,
        detail={"consent_id": claim.consent_id, "status": status},
    )
    return info


def _describe(row: DonatedFile, outcome: anonymize.Outcome, status: str) -> None:
    row.status = status
    row.reason_code = outcome.reason_code
    row.reason = outcome.reason
    row.sop_class_uid = outcome.sop_class_uid
    row.modality = outcome.modality
    row.study_instance_uid = outcome.study_instance_uid
    row.series_instance_uid = outcome.series_instance_uid
    row.sop_instance_uid = outcome.sop_instance_uid
    row.body_part = outcome.body_part
    row.patient_sex = outcome.patient_sex
    row.patient_age_years = outcome.patient_age_years
    row.study_year = outcome.study_year


def _fingerprint(deid_key: bytes, donor_id: int, sop_instance_uid: str | None) -> str | None:
    """Keyed and scoped to the donor: the de-identified UID is itself a keyed function of the
    source SOP Instance UID, so the raw UID is never kept, and donors cannot be linked."""
    if not sop_instance_uid:
        return None
    message = f"donated-image:{donor_id}:{sop_instance_uid}".encode()
    return hmac.new(deid_key, message, hashlib.sha256).hexdigest()


def _donated_before(session: Session, donor_id: int, fingerprint: str) -> bool:
    found = session.scalar(
        select(DonatedFile.id)
        .join(Donation, Donation.id == DonatedFile.donation_id)
        .where(
            Donation.donor_id == donor_id,
            DonatedFile.fingerprint == fingerprint,
            DonatedFile.status.in_((FILE_ACCEPTED, FILE_NEEDS_REVIEW)),
        )
        .limit(1)
    )
    return found is not None


def _files_of(session: Session, upload_id: str) -> list[DonatedFile]:
    return list(session.scalars(select(DonatedFile).where(DonatedFile.upload_id == upload_id)))


def _finish_files(
    session: Session, upload_id: str, status: str, code: str | None, reason: str | None
) -> None:
    for row in _files_of(session, upload_id):
        row.status, row.reason_code, row.reason = status, code, reason


def _fail(session_factory: sessionmaker[Session], store_for: StoreFor, upload_id: str) -> str:
    with session_factory() as session:
        begin_write(session)
        upload = session.scalars(
            select(Upload).where(Upload.id == upload_id).with_for_update()
        ).first()
        if upload is None or upload.state not in (UPLOAD_QUEUED, UPLOAD_PROCESSING):
            return upload.state if upload else "missing"
        _finish_files(session, upload.id, FILE_REJECTED, "processing_failed", _FAILED_REASON)
        parts = uploads.release_quarantine(session, upload)
        upload.state = UPLOAD_DONE
        session.commit()
    _delete_parts(store_for, session_factory, parts)
    return UPLOAD_DONE


def _state_of(session_factory: sessionmaker[Session], upload_id: str) -> str:
    with session_factory() as session:
        state = session.scalar(select(Upload.state).where(Upload.id == upload_id))
        return state or "missing"


def _discard(
    store_for: StoreFor, session_factory: sessionmaker[Session], info: ObjectInfo | None
) -> None:
    if info is not None:
        _delete_parts(store_for, session_factory, [info.object_id])


def _delete_parts(
    store_for: StoreFor, session_factory: sessionmaker[Session], object_ids: list[str]
) -> None:
    """After the commit: delete objects; failures are logged, the reconciler finishes them."""
    if object_ids:
        with session_factory() as session:
            uploads.delete_quietly(store_for(session), object_ids)


def requeue_stalled(session: Session, queue: JobQueue, stalled_after_seconds: int) -> int:
    """Send again the jobs of uploads queued or processing for too long (a lost message, a
    killed worker on a broker without redelivery); the job itself is idempotent."""
    limit = utcnow() - timedelta(seconds=stalled_after_seconds)
    begin_write(session)
    stalled = list(
        session.scalars(
            select(Upload.id).where(
                Upload.state.in_((UPLOAD_QUEUED, UPLOAD_PROCESSING)), Upload.updated_at < limit
            )
        )
    )
    if stalled:
        for upload in session.scalars(select(Upload).where(Upload.id.in_(stalled))):
            upload.updated_at = utcnow()
    session.commit()
    if stalled:
        queue.send_ingest(stalled)
    return len(stalled)


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
