"""Recording the expiry of consents past their ``expires_at``.

A consent is expired from its ``expires_at`` on whether or not this has run (see
``consent.policy``); the ``expired`` event puts the moment in its history and audit trail.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent import audit
from consent.canonical import as_utc
from consent.db import utcnow
from consent.event_log import append_event
from consent.models import Consent, ConsentEvent
from consent.policy import ENDED, EXPIRED


def expire_due(session: Session, at: datetime | None = None) -> list[ConsentEvent]:
    """Record ``expired`` for every consent past its expiry that has not ended yet."""
    moment = as_utc(at or utcnow())
    query = select(Consent.id).where(Consent.expires_at.is_not(None), Consent.expires_at <= moment)
    due = list(session.scalars(query))
    ended = _ended(session, due)
    return [
        append_event(session, consent_id, EXPIRED, {}, audit.SYSTEM)
        for consent_id in due
        if consent_id not in ended
    ]


def _ended(session: Session, consent_ids: list[str]) -> set[str]:
    """Those of the consents with a ``withdrawn`` or ``expired`` event."""
    if not consent_ids:
        return set()
    query = select(ConsentEvent.consent_id).where(
        ConsentEvent.consent_id.in_(consent_ids), ConsentEvent.kind.in_(ENDED)
    )
    return set(session.scalars(query))
