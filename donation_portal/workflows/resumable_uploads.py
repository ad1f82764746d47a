"""tus 1.0 resumable uploads as use cases: create, append a body, terminate.

The upload's offset only moves once a part is committed to storage and recorded, so the
offset a client is told is always one the server can resume from, even after a crash.
No transaction is open while a body is received: :func:`begin_append` checks and ends its
read, the body goes to storage, then :func:`record_part` writes in one short transaction.
That keeps SQLite correct with many donors at once (writers queue for a moment, never for an
upload's duration).
"""


from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

import consent
from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.jobs import JobQueue
from donation_portal.adapters.keystore import DatabaseKeyStore
from donation_portal.adapters.models import (
    UPLOAD_EXPIRED,
    UPLOAD_RECEIVING,
    UPLOAD_TERMINATED,
    Upload,
)
from donation_portal.workflows import uploads
from storage import (
    ObjectInfo,
    ObjectStore,
    ObjectWriter,
    new_quarantine_scope,
)


@dataclass(frozen=True)
class AppendTicket:
    """What appending a body needs, read before the body is received (no transaction open)."""

    upload_id: str
    consent_id: str
    scope_id: str
    public_key: bytes
    offset: int
    length: int


def create_upload(
    session: Session,
    store: ObjectStore,
    *,
    donor_id: int,
    active: consent.Consent,
    submission_key: str,
    length: int,
    limits: uploads.UploadLimits,
) -> Upload:
    """Open an upload of ``length`` bytes in the donation named by ``submission_key``; commits."""
    uploads.check_length(length, limits)
    begin_write(session)
    uploads.check_active(session, active.id)
    uploads.check_limits(session, donor_id, length, limits)
    donation = uploads.claim_donation(session, donor_id, active, submission_key)
    upload = uploads.new_upload(donor_id, donation, new_quarantine_scope(), length, 0, limits)
    store.ensure_scope(upload.scope_id)
    session.add(upload)
    session.commit()
    return upload


def begin_append(session: Session, upload_id: str, donor_id: int, offset: int) -> AppendTicket:
    """Check a PATCH before its body is read; ends the read transaction."""
    try:
        upload = uploads.find_upload(session, upload_id, donor_id)
        uploads.check_open(upload)
        if offset != upload.offset:
            raise uploads.OffsetMismatch(
                f"The upload is at byte {upload.offset}, not {offset}. Please resume from there."
            )
        if upload.state == UPLOAD_RECEIVING:
            uploads.check_active(session, upload.consent_id)
        ticket = AppendTicket(
            upload_id=upload.id,
            consent_id=upload.consent_id,
            scope_id=upload.scope_id,
            public_key=b"" if upload.state != UPLOAD_RECEIVING else _public_key(session, upload),
            offset=upload.offset,
            length=upload.length,
        )
    finally:
        uploads.end_read(session)
    return ticket


def _public_key(session: Session, upload: Upload) -> bytes:
    key = DatabaseKeyStore(session).get(upload.scope_id)
    if key is None:
        raise uploads.UploadGone(uploads.GONE[UPLOAD_EXPIRED])
    return key.public_key


def write_part(
    store: ObjectStore,
    ticket: AppendTicket,
    chunks: Iterable[bytes],
    checksum: tuple[str, bytes] | None = None,
) -> ObjectInfo | None:
    """Encrypt a body into a new part object; None when no byte arrived.

    A body longer than the upload's remaining length is refused whole. When the client goes
    away mid-body, what arrived is kept (and the offset moves) unless a checksum was sent,
    which cannot be checked on a partial body.
    """
    remaining = ticket.length - ticket.offset
    digest = hashlib.new(checksum[0]) if checksum else None
    writer: ObjectWriter | None = None  # opened with the first byte: an empty body writes nothing
    received = 0
    try:
        try:
            for chunk in chunks:
                received += len(chunk)
                if received > remaining:
                    raise uploads.TooLarge("The request sends more bytes than the upload declared.")
                if digest is not None:
                    digest.update(chunk)
                if writer is None:
                    writer = ObjectWriter(store.backend, ticket.scope_id, ticket.public_key)
                writer.write(chunk)
        except uploads.BodyInterrupted:
            if checksum is not None or received == 0:
                raise
        if writer is None:
            return None
        if (
            digest is not None
            and checksum is not None
            and not hmac.compare_digest(digest.digest(), checksum[1])
        ):
            raise uploads.ChecksumMismatch(
                "The data does not match its checksum; please resend it."
            )
        return writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def record_part(
    session: Session,
    store: ObjectStore,
    ticket: AppendTicket,
    info: ObjectInfo,
    queue: JobQueue,
) -> Upload:
    """Record a committed part and move the offset; a finished upload goes to the queue."""
    try:
        begin_write(session)
        upload = uploads.lock_upload(session, ticket.upload_id, ticket.consent_id)
        uploads.check_active(session, upload.consent_id)
        uploads.check_open(upload)
        if upload.state != UPLOAD_RECEIVING or upload.offset != ticket.offset:
            raise uploads.OffsetMismatch("Another request sent this part already. Please resume.")
        session.add(uploads.part_row(upload.id, ticket.offset, info))
        upload.offset += info.size
        upload.updated_at = utcnow()
        if upload.offset == upload.length:
            uploads.hand_over(session, upload, queue)
        session.commit()
    except BaseException:
        session.rollback()
        uploads.delete_quietly(store, [info.object_id])
        raise
    return upload


def terminate(session: Session, store: ObjectStore, upload_id: str, donor_id: int) -> None:
    """tus termination: the donor cancelled the file; its parts and key are destroyed."""
    begin_write(session)
    upload = uploads.find_upload(session, upload_id, donor_id)
    upload = uploads.lock_upload(session, upload.id, upload.consent_id)
    uploads.check_open(upload)
    if upload.state != UPLOAD_RECEIVING:
        session.rollback()
        raise uploads.AlreadySubmitted(
            "This file was received whole and is being processed already."
        )
    objects = uploads.end_upload(session, upload, UPLOAD_TERMINATED)
    session.commit()
    uploads.delete_quietly(store, objects)
