"""Steward review: donations into the research pool, quarantined files, withdrawals seen.

Every decision is one unit of work, committed here: who and when on the row and in the
audit trail. Files the engine held for review stay out of the pool until a steward clears
them; a file refused on review is deleted after the commit (a failed deletion is logged and
left to the reconciler).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import consent as consents
from consent import Consent, ConsentEvent, ConsentTemplate
from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import (
    REVIEW_APPROVED,
    REVIEW_PENDING,
    REVIEW_REJECTED,
    DonatedFile,
    Donation,
    StoredObject,
    User,
    WithdrawalAcknowledgement,
    user_ref,
)
from donation_portal.workflows import withdrawal
from donation_portal.workflows.ingest import ACCEPTED, NEEDS_REVIEW, REJECTED
from donation_portal.workflows.listing import window
from donation_portal.workflows.maintenance import delete_objects
from storage import ObjectStore

EXPIRY_WARNING = timedelta(days=30)


class ReviewError(Exception):
    """A review decision was refused; the message is safe to show."""


@dataclass(frozen=True)
class WithdrawalItem:
    """One withdrawal event as the steward sees it. ``files`` is the number the donor was
    told: files erased for an "erase", files kept otherwise (``withdrawal.erased_files`` and
    ``kept_files``, over every consent the withdrawal ended). An earlier consent withdrawn
    along with a later one has its files counted there: ``counted_with`` names that one."""

    event: ConsentEvent
    files: int
    erased: bool
    counted_with: str | None
    acknowledged: WithdrawalAcknowledgement | None


def actor(user: User) -> str:
    return user_ref(user.id)


def decide_donation(
    session: Session, donation_id: str, steward: User, *, approve: bool, reason: str = ""
) -> Donation:
    """Approve a donation into the research pool, or reject it with a reason. Commits."""
    begin_write(session)
    donation = session.get(Donation, donation_id, with_for_update=True)
    if donation is None:
        raise ReviewError("This donation does not exist.")
    if donation.review_status != REVIEW_PENDING:
        raise ReviewError("This donation has already been reviewed.")
    if not approve and not reason.strip():
        raise ReviewError("Please give a reason for the rejection.")
    if approve and not consents.in_force(session, donation.consent_id):
        raise ReviewError("The donor's consent is no longer in force; it cannot be approved.")
    donation.review_status = REVIEW_APPROVED if approve else REVIEW_REJECTED
    donation.reviewed_by = steward.id
    donation.reviewed_at = utcnow()
    donation.review_reason = reason.strip() or None
    session.flush()
    consents.audit.record(
        session,
        "donation.approved" if approve else "donation.rejected",
        actor=actor(steward),
        subject_type="donation",
        subject_id=donation.id,
        detail={"consent_id": donation.consent_id},
    )
    session.commit()
    return donation


def consents_page(session: Session, limit: int, offset: int) -> tuple[list[Consent], int]:
    """A page of every consent, the latest signed first, and how many there are."""
    query = select(Consent).order_by(Consent.signed_at.desc(), Consent.id.desc())
    return window(session, query, limit, offset)


def templates_page(session: Session, limit: int, offset: int) -> tuple[list[ConsentTemplate], int]:
    """A page of the published consent templates, newest first, and how many there are."""
    query = select(ConsentTemplate).order_by(
        ConsentTemplate.published_at.desc(), ConsentTemplate.id
    )
    return window(session, query, limit, offset)


def donations_page(session: Session, limit: int, offset: int) -> tuple[list[Donation], int]:
    """A page of every donation, the latest first, and how many there are."""
    query = select(Donation).order_by(Donation.created_at.desc(), Donation.id)
    return window(session, query, limit, offset)


def file_counts(session: Session, donation_ids: list[str]) -> dict[str, dict[str, int]]:
    """How many files of each donation are in each state: {donation: {status: files}}."""
    counts: dict[str, dict[str, int]] = {}
    query = (
        select(DonatedFile.donation_id, DonatedFile.status, func.count())
        .where(DonatedFile.donation_id.in_(donation_ids))
        .group_by(DonatedFile.donation_id, DonatedFile.status)
    )
    for donation_id, file_status, files in session.execute(query):
        counts.setdefault(donation_id, {})[file_status] = files
    return counts


def files_awaiting_review(
    session: Session, limit: int, offset: int
) -> tuple[list[DonatedFile], int]:
    """A page of the files held for review, the longest waiting first, and how many."""
    query = (
        select(DonatedFile)
        .where(DonatedFile.status == NEEDS_REVIEW)
        .order_by(DonatedFile.created_at, DonatedFile.id)
    )
    return window(session, query, limit, offset)


def decide_file(
    session: Session,
    file_id: int,
    steward: User,
    store: ObjectStore,
    *,
    release: bool,
) -> DonatedFile:
    """Clear a quarantined file for the pool, or refuse it (its object is deleted after the
    commit). Commits."""
    begin_write(session)
    doomed: list[str] = []
    donated = session.get(DonatedFile, file_id, with_for_update=True)
    if donated is None or donated.status != NEEDS_REVIEW:
        raise ReviewError("This file is not waiting for review.")
    if release and not consents.in_force(session, donated.consent_id):
        raise ReviewError("The donor's consent is no longer in force; this file cannot be cleared.")
    donated.reviewed_by = steward.id
    donated.reviewed_at = utcnow()
    if release:
        donated.status = ACCEPTED
    else:
        object_id = donated.object_id
        donated.status = REJECTED
        donated.reason_code = "refused_on_review"
        donated.reason = "A data steward found text in the image that could identify you."
        donated.object_id = None
        if object_id is not None:
            session.flush()
            session.delete(session.get(StoredObject, object_id))
            doomed.append(object_id)
    session.flush()
    consents.audit.record(
        session,
        "file.cleared" if release else "file.refused",
        actor=actor(steward),
        subject_type="donated_file",
        subject_id=str(donated.id),
        detail={"donation_id": donated.donation_id},
    )
    session.commit()
    delete_objects(store, doomed)
    return donated


def withdrawals(session: Session, limit: int, offset: int) -> tuple[list[WithdrawalItem], int]:
    """A page of the withdrawals, the latest first, each with how many files it erased or
    kept (the numbers the donor was told) and whether it was acknowledged; and how many
    withdrawals there are."""
    events, total = window(
        session,
        select(ConsentEvent)
        .where(ConsentEvent.kind.in_([consents.WITHDRAWN, "module_withdrawn"]))
        .order_by(ConsentEvent.at.desc(), ConsentEvent.id.desc()),
        limit,
        offset,
    )
    acks = {
        ack.event_id: ack
        for ack in session.scalars(
            select(WithdrawalAcknowledgement).where(
                WithdrawalAcknowledgement.event_id.in_([event.id for event in events])
            )
        )
    }
    return [_withdrawal_item(session, event, acks.get(event.id)) for event in events], total


def _withdrawal_item(
    session: Session, event: ConsentEvent, ack: WithdrawalAcknowledgement | None
) -> WithdrawalItem:
    via = event.detail.get("via")
    if via is not None:
        return WithdrawalItem(event, 0, False, via, ack)
    ended = withdrawal.withdrawn_together(session, event)
    if event.detail.get("mode") == consents.ERASE:
        return WithdrawalItem(event, withdrawal.erased_files(session, ended), True, None, ack)
    return WithdrawalItem(event, withdrawal.kept_files(session, ended), False, None, ack)


def acknowledge_withdrawal(session: Session, event_id: int, steward: User) -> None:
    """Record that ``steward`` has seen a withdrawal. Commits."""
    begin_write(session)
    event = session.get(ConsentEvent, event_id)
    if event is None or event.kind not in (consents.WITHDRAWN, "module_withdrawn"):
        raise ReviewError("This withdrawal does not exist.")
    existing = session.scalars(
        select(WithdrawalAcknowledgement).where(WithdrawalAcknowledgement.event_id == event_id)
    ).first()
    if existing is not None:
        raise ReviewError("This withdrawal has already been acknowledged.")
    session.add(WithdrawalAcknowledgement(event_id=event_id, steward_id=steward.id))
    session.flush()
    consents.audit.record(
        session,
        "withdrawal.acknowledged",
        actor=actor(steward),
        subject_type="consent",
        subject_id=event.consent_id,
        detail={"event_id": event_id},
    )
    session.commit()


def export_consent(session: Session, consent_id: str, steward: User) -> dict[str, Any]:
    """A consent as a FHIR R4 Consent resource for ``steward``; the export is audited, since
    the resource names the donor and leaves the portal. UnknownConsent if there is none.
    Commits."""
    resource = consents.to_fhir_consent(session, consent_id)
    begin_write(session)
    consents.audit.record(
        session,
        "consent.exported",
        actor=actor(steward),
        subject_type="consent",
        subject_id=consent_id,
        detail={"format": "fhir-r4"},
    )
    session.commit()
    return resource


def expiring_consents(session: Session) -> list[Consent]:
    return consents.expiring(session, within=EXPIRY_WARNING)
