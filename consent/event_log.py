"""Appending a consent event: the one way the library changes a consent after signing.

Each event is written to the audit trail (``consent.<kind>``) in the same transaction, with
an opaque actor, so callers never audit consent events themselves.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from consent import audit
from consent.db import utcnow
from consent.models import ConsentEvent


def append_event(
    session: Session, consent_id: str, kind: str, detail: dict[str, Any], actor: str
) -> ConsentEvent:
    """Record an event of ``kind`` for the consent, and its audit entry."""
    event = ConsentEvent(consent_id=consent_id, kind=kind, detail=detail, at=utcnow())
    session.add(event)
    session.flush()
    audit.record(
        session,
        f"consent.{kind}",
        actor=actor,
        subject_type="consent",
        subject_id=consent_id,
        detail=detail,
    )
    return event
