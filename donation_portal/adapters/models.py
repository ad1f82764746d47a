"""Tables of the web app: accounts, donations and their files, stored objects, wrapped keys.

They share the consent library's MetaData, so one alembic history covers the whole schema and
foreign keys to consents resolve by table name.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from consent.db import ConsentBase, utcnow
from donation_portal.adapters import mfa_models  # noqa: F401  (registers the second factors)
from storage import ObjectInfo

ROLES = ("donor", "steward", "researcher", "admin")

# A donated file's status, as the donor sees it: waiting for a worker, being processed, then
# one of the outcomes. ``duplicate``: the donor gave this image before; it is not stored twice.
FILE_WAITING = "waiting"
FILE_PROCESSING = "processing"
FILE_ACCEPTED = "accepted"
FILE_NEEDS_REVIEW = "needs_review"
FILE_REJECTED = "rejected"
FILE_DUPLICATE = "duplicate"
FILE_ERASED = "erased"
FILE_CANCELLED = "cancelled"
FILE_PENDING_STATES = (FILE_WAITING, FILE_PROCESSING)

# An upload's state: bytes arriving (tus), then handed to the ingest job, then finished.
UPLOAD_RECEIVING = "receiving"
UPLOAD_QUEUED = "queued"
UPLOAD_PROCESSING = "processing"
UPLOAD_DONE = "done"
UPLOAD_TERMINATED = "terminated"
UPLOAD_EXPIRED = "expired"
UPLOAD_CANCELLED = "cancelled"
UPLOAD_LIVE_STATES = (UPLOAD_RECEIVING, UPLOAD_QUEUED, UPLOAD_PROCESSING)
REVIEW_PENDING = "pending"
REVIEW_APPROVED = "approved"
REVIEW_REJECTED = "rejected"


def user_ref(user_id: int) -> str:
    """How an account is named to the consent library and the audit trail (subject or actor):
    an opaque reference, never a name or an e-mail address."""
    return f"user:{user_id}"


class Base(DeclarativeBase):
    metadata = ConsentBase.metadata


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # set by an admin: the account cannot log in, and its sessions and API tokens are ended
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # None until the owner of the address opens the link sent on registering: the account
    # cannot log in before. The link's token (only its SHA-256 kept) works once, until
    # ``confirmation_expires_at``; confirming clears both.
    email_confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmation_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    confirmation_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginSession(Base):
    """One login (a browser), listed to its owner, who can end it from another one.

    The cookie holds a random key; only its SHA-256 is kept, so a copy of this table opens
    no session. Ending a session deletes its row: the cookie is refused from then on.
    ``device`` is a summary of the browser's User-Agent ("Firefox on Windows"), nothing more.
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    device: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PasswordReset(Base):
    """A password-reset link sent by e-mail: only the SHA-256 of its token is kept. It works
    until ``expires_at``, and once: using it, or asking for a newer one, deletes the row."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Donation(Base):
    """One submitted upload form; ``submission_key`` makes a re-submission idempotent."""

    __tablename__ = "donations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    donor_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), index=True)
    submission_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    review_status: Mapped[str] = mapped_column(
        String(20), default=REVIEW_PENDING, server_default=REVIEW_PENDING, index=True
    )
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_reason: Mapped[str | None] = mapped_column(String(500))

    files: Mapped[list[DonatedFile]] = relationship(
        back_populates="donation", order_by="DonatedFile.position"
    )


class DonatedFile(Base):
    """The outcome for one uploaded file. Holds de-identified metadata only, never a file name."""

    __tablename__ = "donated_files"
    __table_args__ = (UniqueConstraint("upload_id", "member"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    donation_id: Mapped[str] = mapped_column(ForeignKey("donations.id"), index=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    reason_code: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(String(300))
    object_id: Mapped[str | None] = mapped_column(ForeignKey("stored_objects.object_id"))
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    body_part: Mapped[str | None] = mapped_column(String(16))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    patient_age_years: Mapped[int | None] = mapped_column(Integer)
    study_year: Mapped[int | None] = mapped_column(Integer)  # of the de-identified (shifted) date
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    upload_id: Mapped[str | None] = mapped_column(ForeignKey("uploads.id"), index=True)
    # the index of the entry when the upload was a ZIP archive (None: the upload itself)
    member: Mapped[int | None] = mapped_column(Integer)
    # keyed fingerprint of the source SOP Instance UID, scoped to the donor: recognises an
    # image donated twice without keeping the UID itself
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)

    donation: Mapped[Donation] = relationship(back_populates="files")
    stored_object: Mapped[StoredObject | None] = relationship()


class StoredObject(Base):
    """An encrypted object in the storage backend, with the digests every full read checks."""

    __tablename__ = "stored_objects"

    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    stored_size: Mapped[int] = mapped_column(Integer)
    stored_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def object_columns(info: ObjectInfo) -> dict[str, Any]:
    """The columns a StoredObject or an UploadPart records of an object (see stored_info)."""
    return dataclasses.asdict(info)


def stored_info(row: StoredObject | UploadPart) -> ObjectInfo:
    """What the storage library needs to read and check the object."""
    return ObjectInfo(
        object_id=row.object_id,
        scope_id=row.scope_id,
        size=row.size,
        sha256=row.sha256,
        stored_size=row.stored_size,
        stored_sha256=row.stored_sha256,
    )


class Upload(Base):
    """One file sent by a donor (tus, or the plain form): encrypted parts, then the ingest job.

    ``offset`` is durable: it only moves when a part has been committed to storage and recorded
    here. The parts are encrypted to the upload's own quarantine key scope, destroyed with them.
    """

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    donor_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), index=True)
    donation_id: Mapped[str] = mapped_column(ForeignKey("donations.id"), index=True)
    scope_id: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(20), default=UPLOAD_RECEIVING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    parts: Mapped[list[UploadPart]] = relationship(order_by="UploadPart.offset")


class UploadPart(Base):
    """A committed, encrypted piece of an upload (one PATCH, or what arrived before a break)."""

    __tablename__ = "upload_parts"
    __table_args__ = (UniqueConstraint("upload_id", "offset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    object_id: Mapped[str] = mapped_column(String(64), unique=True)
    scope_id: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    stored_size: Mapped[int] = mapped_column(BigInteger)
    stored_sha256: Mapped[str] = mapped_column(String(64))


class WorkerHeartbeat(Base):
    """The last time each worker ran the scheduled heartbeat job; /healthz reads it."""

    __tablename__ = "worker_heartbeats"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScopeKey(Base):
    """A key scope's X25519 key pair; the private key only ever wrapped by the master key."""

    __tablename__ = "scope_keys"

    scope_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    kek_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WithdrawalAcknowledgement(Base):
    """A steward has seen a withdrawal (and what it touched)."""

    __tablename__ = "withdrawal_acknowledgements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("consent_events.id"), unique=True)
    steward_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


REQUEST_SUBMITTED = "submitted"
REQUEST_APPROVED = "approved"
REQUEST_REJECTED = "rejected"


class ResearcherProfile(Base):
    """A researcher's affiliation and the Crypt4GH public key their releases are encrypted to."""

    __tablename__ = "researcher_profiles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    affiliation: Mapped[str] = mapped_column(String(200))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AccessRequest(Base):
    """A researcher's request for data, with the intended use expressed as DUO terms."""

    __tablename__ = "access_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    researcher_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    abstract: Mapped[str] = mapped_column(Text)
    use: Mapped[dict[str, Any]] = mapped_column(JSON)
    filters: Mapped[dict[str, Any]] = mapped_column(JSON)
    ethics_object_id: Mapped[str | None] = mapped_column(
        ForeignKey("stored_objects.object_id")
    )  # the ethics approval document, stored encrypted like every donated file
    status: Mapped[str] = mapped_column(String(20), default=REQUEST_SUBMITTED, index=True)
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RequestApproval(Base):
    """One steward's approval; a release needs as many different stewards as configured."""

    __tablename__ = "request_approvals"
    __table_args__ = (UniqueConstraint("request_id", "steward_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"), index=True)
    steward_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Release(Base):
    """The data released for an approved request; its items are frozen at approval."""

    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"), unique=True)
    researcher_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    items: Mapped[list[ReleaseItem]] = relationship(order_by="ReleaseItem.position")


class ReleaseItem(Base):
    """One file of a release manifest; never changed after approval.

    ``object_id`` is a plain string, not a foreign key: erasing a consent deletes the stored
    object, while the manifest keeps recording what was released.
    """

    __tablename__ = "release_items"
    __table_args__ = (UniqueConstraint("release_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    donated_file_id: Mapped[int] = mapped_column(ForeignKey("donated_files.id"), index=True)
    consent_id: Mapped[str] = mapped_column(String(40), index=True)
    object_id: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    body_part: Mapped[str | None] = mapped_column(String(16))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    patient_age_years: Mapped[int | None] = mapped_column(Integer)
    study_year: Mapped[int | None] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))


class WithdrawalNotice(Base):
    """A researcher must learn that donors withdrew from a release, and acknowledge it."""

    __tablename__ = "withdrawal_notices"
    __table_args__ = (UniqueConstraint("release_id", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("consent_events.id"), index=True)
    sop_instance_uids: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A researcher's API token; only its SHA-256 is kept, the token is shown once.

    It grants only its ``scopes`` (names from ``workflows.tokens.SCOPES``), until it expires
    or is revoked (by its owner or an admin: ``revoked_by``). The row outlives both, so the
    owner still sees the token listed and the API can say why it is refused.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
