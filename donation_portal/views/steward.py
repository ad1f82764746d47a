"""Steward pages: consents with their state, donations with file counts, withdrawals."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import func, select

import consent as consents
from consent import Consent, ConsentEvent
from donation_portal.db import get_session
from donation_portal.models import DonatedFile, Donation
from donation_portal.security import role_required

bp = Blueprint("steward", __name__, url_prefix="/steward")
STAFF = ("steward", "admin")


@bp.get("/", endpoint="consents")
@role_required(*STAFF)
def consents_page() -> str:
    session = get_session()
    rows = session.scalars(select(Consent).order_by(Consent.signed_at.desc())).all()
    state = consents.states(session, [row.id for row in rows])
    return render_template("steward/consents.html", consents=rows, state=state)


@bp.get("/donations")
@role_required(*STAFF)
def donations() -> str:
    session = get_session()
    counts = select(
        DonatedFile.donation_id,
        DonatedFile.status,
        func.count().label("files"),
    ).group_by(DonatedFile.donation_id, DonatedFile.status)
    by_donation: dict[str, dict[str, int]] = {}
    for donation_id, status, files in session.execute(counts):
        by_donation.setdefault(donation_id, {})[status] = files
    rows = session.scalars(select(Donation).order_by(Donation.created_at.desc())).all()
    state = consents.states(session, {row.consent_id for row in rows})
    return render_template(
        "steward/donations.html", donations=rows, counts=by_donation, state=state
    )


@bp.get("/withdrawals")
@role_required(*STAFF)
def withdrawals() -> str:
    session = get_session()
    events = session.scalars(
        select(ConsentEvent)
        .where(ConsentEvent.kind == consents.WITHDRAWN)
        .order_by(ConsentEvent.at.desc())
    ).all()
    erased = dict(
        session.execute(
            select(DonatedFile.consent_id, func.count())
            .where(DonatedFile.consent_id.in_([e.consent_id for e in events]))
            .group_by(DonatedFile.consent_id)
        ).all()
    )
    return render_template("steward/withdrawals.html", events=events, erased=erased)
