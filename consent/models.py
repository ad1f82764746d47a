"""Consent tables: published templates, consents, their events, and the audit trail.

None of these rows is ever updated or deleted by the library: a consent's state is derived
from its events, and the audit trail is a hash chain. Production deployments should also
``REVOKE UPDATE, DELETE`` on consent_templates, consents, consent_events and audit_entries
from the application's database role, so the rule holds below the library too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from consent.db import ConsentBase, utcnow


class ConsentTemplate(ConsentBase):
    """A published consent text. Immutable: its ID is the SHA-256 of its canonical form."""

    __tablename__ = "consent_templates"
    __table_args__ = (
        UniqueConstraint(
            "name", "version", "language", name="uq_consent_templates_name_version_language"
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[str] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(8))
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    modules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    consent_valid_days: Mapped[int | None] = mapped_column(Integer)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Consent(ConsentBase):
    """One donor's consent to one template version. Never updated: see ConsentEvent."""

    __tablename__ = "consents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(64), index=True)
    pseudonym: Mapped[str] = mapped_column(String(40), unique=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("consent_templates.id"))
    modules: Mapped[list[str]] = mapped_column(JSON)
    signature_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawal_code_hash: Mapped[str | None] = mapped_column(String(64))
    supersedes_id: Mapped[str | None] = mapped_column(ForeignKey("consents.id"), index=True)


class ConsentEvent(ConsentBase):
    """Append-only history of a consent (given, withdrawn, ...); its current state is derived."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AuditEntry(ConsentBase):
    """One link of the hash-chained audit trail; ``hash`` covers every other column.

    ``prev_hash`` is unique, so two writers can never both extend the same head: the chain
    cannot fork even where the writers were not serialised by a lock.
    """

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(100), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
