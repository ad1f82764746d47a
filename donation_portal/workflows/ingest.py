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

import io
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO, cast

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
    FILE_PENDING_STATES,
    FILE_PROCESSING,
    FILE_REJECTED,
    UPLOAD_CANCELLED,
    UPLOAD_DONE,
    UPLOAD_PROCESSING,
    UPLOAD_QUEUED,
    DonatedFile,
    StoredObject,
    Upload,
    object_columns,
    stored_info,
)
from donation_portal.workflows import archives, uploads
from donation_portal.workflows.deidentified import (
    DUPLICATE_REASON,
    Claim,
    StoreFor,
    audit_uploaded,
    deidentify_to_object,
    delete_objects,
    describe,
    donated_before,
    fingerprint,
    kept_status,
    too_large,
)
from storage import (
    Backend,
    KeyUnavailable,
    ObjectInfo,
    ObjectNotFound,
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

_FAILED_REASON = (
    "We could not process this file because of a problem on our side. It was not stored; "
    "please send it again later."
)


_READ_BUFFER = 1 << 20


class RetryLater(Exception):
    """A transient failure: run the job again later (with back-off)."""


def run_ingest_job(
    session_factory: sessionmaker[Session],
    store_for: StoreFor,
    deid_key: bytes,
    upload_id: str,
    *,
    final_attempt: bool,
    max_file_bytes: int = 2**31,
) -> str:
    """Process upload ``upload_id`` once; returns the upload's state afterwards.

    A ZIP archive (a CD sent as one file) goes to :mod:`archives`; anything else is one file.
    """
    try:
        work = _claim(session_factory, store_for, upload_id)
        if work is None:
            return _state_of(session_factory, upload_id)
        claim, source, backend = work
        stream = cast(BinaryIO, source)  # a RawIOBase; typeshed's BinaryIO is nominal
        if archives.is_archive(stream):
            return archives.ingest_archive(
                session_factory,
                store_for,
                backend,
                deid_key,
                upload_id,
                claim,
                stream,
                max_entry_bytes=max_file_bytes,
            )
        if sum(part.size for part in claim.parts) > max_file_bytes:
            source.close()  # declared a ZIP archive for its size limit, but it is not one
            produced = _Produced(too_large(max_file_bytes), None)
        else:
            produced = _deidentify(deid_key, claim, source, backend)
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
) -> tuple[Claim, ConcatenatedReader, Backend] | None:
    """Mark the upload as processing and open what de-identifying needs, in one transaction:
    the decrypting readers of its parts and the public key of the consent's key scope."""
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
            if row.status in FILE_PENDING_STATES:  # an archive's images recorded before stay
                row.status = FILE_PROCESSING
        record = session.get(consent.Consent, upload.consent_id)
        assert record is not None
        store = store_for(session)
        claim = Claim(
            consent_id=record.id,
            donor_id=upload.donor_id,
            pseudonym=record.pseudonym,
            public_key=store.ensure_scope(record.id),
            parts=[stored_info(part) for part in upload.parts],
        )
        readers: list[BinaryIO] = []
        try:
            for part in claim.parts:
                # a DecryptingReader is a RawIOBase; typeshed's BinaryIO is nominal
                readers.append(cast(BinaryIO, store.open(part)))
            session.commit()
        except BaseException:
            for reader in readers:
                reader.close()
            raise
    return claim, ConcatenatedReader(readers, [part.size for part in claim.parts]), store.backend


@dataclass(frozen=True)
class _Produced:
    outcome: anonymize.Outcome
    info: ObjectInfo | None


def _deidentify(
    deid_key: bytes, claim: Claim, source: ConcatenatedReader, backend: Backend
) -> _Produced:
    """No transaction is open here: this is the long part."""
    try:
        # pydicom reads element by element: from a buffer, not from the decrypting reader
        buffered = io.BufferedReader(source, _READ_BUFFER)
        return _Produced(*deidentify_to_object(backend, claim, buffered, deid_key))
    finally:
        source.close()


def _record(
    session_factory: sessionmaker[Session],
    store_for: StoreFor,
    deid_key: bytes,
    upload_id: str,
    claim: Claim,
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
    delete_objects(store_for, session_factory, parts)
    return state


def _store_outcome(
    session: Session, upload: Upload, claim: Claim, produced: _Produced, deid_key: bytes
) -> ObjectInfo | None:
    """Fill in the file's row; returns the object kept, or None (rejected or duplicate)."""
    outcome, info = produced.outcome, produced.info
    rows = _files_of(session, upload.id)
    if info is None:
        for row in rows:
            describe(row, outcome, FILE_REJECTED)
        return None
    print_ = fingerprint(deid_key, claim.donor_id, outcome.sop_instance_uid)
    if print_ is not None and donated_before(session, claim.donor_id, [print_]):
        for row in rows:
            describe(row, outcome, FILE_DUPLICATE)
            row.reason_code, row.reason = "already_donated", DUPLICATE_REASON
        return None
    status = kept_status(outcome)
    session.add(StoredObject(**object_columns(info)))
    session.flush()
    for row in rows:
        describe(row, outcome, status)
        row.object_id = info.object_id
        row.fingerprint = print_
    audit_uploaded(session, upload, {"status": status})
    return info


def _files_of(session: Session, upload_id: str) -> list[DonatedFile]:
    return list(session.scalars(select(DonatedFile).where(DonatedFile.upload_id == upload_id)))


def _finish_files(
    session: Session, upload_id: str, status: str, code: str | None, reason: str | None
) -> None:
    """Only the files still pending: images of an archive recorded before stay as they are."""
    for row in _files_of(session, upload_id):
        if row.status in FILE_PENDING_STATES:
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
    delete_objects(store_for, session_factory, parts)
    return UPLOAD_DONE


def _state_of(session_factory: sessionmaker[Session], upload_id: str) -> str:
    with session_factory() as session:
        state = session.scalar(select(Upload.state).where(Upload.id == upload_id))
        return state or "missing"


def _discard(
    store_for: StoreFor, session_factory: sessionmaker[Session], info: ObjectInfo | None
) -> None:
    if info is not None:
        delete_objects(store_for, session_factory, [info.object_id])


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
