"""What the ingest job does with a de-identified image once it exists: the parts shared by a
single uploaded file and by the images of an uploaded archive.

Recording is batched by the callers (one transaction for many files), so the questions asked
of the database here take whole sets, not one file at a time.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import anonymize
import consent
from donation_portal.adapters.models import (
    FILE_ACCEPTED,
    FILE_NEEDS_REVIEW,
    DonatedFile,
    Donation,
    Upload,
)
from donation_portal.workflows import uploads
from storage import Backend, ObjectInfo, ObjectStore, ObjectWriter

StoreFor = Callable[[Session], ObjectStore]
DUPLICATE_REASON = "You donated this image before; it is kept once."


@dataclass(frozen=True)
class Claim:
    """What a claimed upload needs while no transaction is open."""

    consent_id: str
    donor_id: int
    pseudonym: str
    public_key: bytes
    parts: list[ObjectInfo]


def rejection(code: str, reason: str) -> anonymize.Outcome:
    """The outcome of a file refused before de-identifying it (too large, damaged archive)."""
    return anonymize.Outcome(
        anonymize.Verdict.REJECTED,
        code,
        reason,
        sop_class_uid=None,
        modality=None,
        study_instance_uid=None,
        series_instance_uid=None,
        sop_instance_uid=None,
    )


def too_large(limit_bytes: int) -> anonymize.Outcome:
    limit = f"{limit_bytes / 2**20:.0f} MiB"
    return rejection("too_large", f"This file is larger than {limit}, the most we accept.")


def kept_status(outcome: anonymize.Outcome) -> str:
    """The file state of an image that was written out (not rejected)."""
    if outcome.verdict == anonymize.Verdict.DEIDENTIFIED:
        return FILE_ACCEPTED
    return FILE_NEEDS_REVIEW


def described(outcome: anonymize.Outcome, status: str) -> dict[str, Any]:
    """The columns of a donated file that its outcome fills in."""
    return {
        "status": status,
        "reason_code": outcome.reason_code,
        "reason": outcome.reason,
        "sop_class_uid": outcome.sop_class_uid,
        "modality": outcome.modality,
        "study_instance_uid": outcome.study_instance_uid,
        "series_instance_uid": outcome.series_instance_uid,
        "sop_instance_uid": outcome.sop_instance_uid,
        "body_part": outcome.body_part,
        "patient_sex": outcome.patient_sex,
        "patient_age_years": outcome.patient_age_years,
        "study_year": outcome.study_year,
    }


def describe(row: DonatedFile, outcome: anonymize.Outcome, status: str) -> None:
    for column, value in described(outcome, status).items():
        setattr(row, column, value)


def audit_uploaded(session: Session, upload: Upload, detail: dict[str, Any]) -> None:
    """The audit entry of files recorded from an upload (one file, or a batch of an archive)."""
    consent.audit.record(
        session,
        "donation.uploaded",
        actor="system:ingest",
        subject_type="donation",
        subject_id=upload.donation_id,
        detail={"consent_id": upload.consent_id, **detail},
    )


def fingerprint(deid_key: bytes, donor_id: int, sop_instance_uid: str | None) -> str | None:
    """Keyed and scoped to the donor: the de-identified UID is itself a keyed function of the
    source SOP Instance UID, so the raw UID is never kept, and donors cannot be linked."""
    if not sop_instance_uid:
        return None
    message = f"donated-image:{donor_id}:{sop_instance_uid}".encode()
    return hmac.new(deid_key, message, hashlib.sha256).hexdigest()


def donated_before(session: Session, donor_id: int, fingerprints: Iterable[str]) -> set[str]:
    """Which of ``fingerprints`` the donor has already given (kept, not erased)."""
    wanted = sorted(set(fingerprints))
    if not wanted:
        return set()
    found = session.scalars(
        select(DonatedFile.fingerprint)
        .join(Donation, Donation.id == DonatedFile.donation_id)
        .where(
            Donation.donor_id == donor_id,
            DonatedFile.fingerprint.in_(wanted),
            DonatedFile.status.in_((FILE_ACCEPTED, FILE_NEEDS_REVIEW)),
        )
    )
    return {value for value in found if value is not None}


def delete_objects(
    store_for: StoreFor, session_factory: sessionmaker[Session], object_ids: list[str]
) -> None:
    """After the commit: delete objects; failures are logged, the reconciler finishes them."""
    if object_ids:
        with session_factory() as session:
            uploads.delete_quietly(store_for(session), object_ids)


def deidentify_to_object(
    backend: Backend, claim: Claim, source: BinaryIO, deid_key: bytes
) -> tuple[anonymize.Outcome, ObjectInfo | None]:
    """De-identify ``source`` into a new object of the consent's key scope; the object is
    committed unless the file is rejected (None), and nothing is left behind on an error."""
    writer = ObjectWriter(backend, claim.consent_id, claim.public_key)
    try:
        output = AppendOnly(writer)
        # a RawIOBase is a binary file at run time; typeshed's BinaryIO is nominal
        outcome = anonymize.deidentify(
            source,
            cast(BinaryIO, output),
            key=deid_key,
            pseudonym=claim.pseudonym,
        )
        if outcome.verdict == anonymize.Verdict.REJECTED:
            writer.abort()
            return outcome, None
        output.drain()
        return outcome, writer.commit()
    except BaseException:
        writer.abort()
        raise


class AppendOnly(io.RawIOBase):
    """A write-only file over an object writer: pydicom asks ``tell()``, it never seeks back.

    pydicom writes element by element, a few bytes at a time; the writes are gathered into
    pieces of ``PIECE`` bytes before they reach the writer (a fifth of the job's time went
    into per-write overhead otherwise). ``drain()`` hands over the rest; it is not ``flush``,
    which ``close`` would call after the writer was aborted."""

    PIECE = 1 << 20

    def __init__(self, writer: ObjectWriter) -> None:
        super().__init__()
        self._writer = writer
        self._pending = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        count = len(memoryview(data).cast("B"))
        self._pending += data
        self._position += count
        if len(self._pending) >= self.PIECE:
            self.drain()
        return count

    def drain(self) -> None:
        if self._pending:
            self._writer.write(bytes(self._pending))
            self._pending.clear()

    def tell(self) -> int:
        return self._position
