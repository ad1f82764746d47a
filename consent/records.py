"""Giving and withdrawing consent. State is derived from the append-only events."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.errors import InvalidSignature, NotActive
from consent.models import Consent, ConsentEvent, ConsentTemplate
from consent.sealing import Sealer

GIVEN = "given"
WITHDRAWN = "withdrawn"
ACTIVE = "active"
_PSEUDONYM_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def new_pseudonym() -> str:
    """A random donor pseudonym; it carries no information about the donor."""
    return "DONOR-" + "".join(secrets.choice(_PSEUDONYM_ALPHABET) for _ in range(12))


def give_consent(
    session: Session,
    *,
    subject_ref: str,
    template: ConsentTemplate,
    modules: Collection[str],
    typed_name: str,
    sealer: Sealer,
) -> Consent:
    """Record a signed consent; the typed name is sealed, never stored in clear."""
    known = {module["id"] for module in template.modules}
    required = {module["id"] for module in template.modules if module.get("required")}
    chosen = set(modules)
    if unknown := chosen - known:
        raise InvalidSignature(f"Unknown consent module(s): {', '.join(sorted(unknown))}.")
    if missing := required - chosen:
        titles = [m["title"] for m in template.modules if m["id"] in missing]
        raise InvalidSignature("Please tick the required part(s): " + "; ".join(titles) + ".")
    if not typed_name.strip():
        raise InvalidSignature("Please type your full name to sign.")
    consent_id = secrets.token_urlsafe(24)
    consent = Consent(
        id=consent_id,
        subject_ref=subject_ref,
        pseudonym=new_pseudonym(),
        template_id=template.id,
        modules=sorted(chosen),
        signature_sealed=sealer.seal(typed_name.strip(), context=consent_id),
    )
    session.add(consent)
    session.add(ConsentEvent(consent_id=consent_id, kind=GIVEN, detail={"modules": sorted(chosen)}))
    session.flush()
    return consent


def withdraw(session: Session, consent: Consent, *, erase: bool) -> ConsentEvent:
    """Withdraw the whole consent. Raises NotActive when it was already withdrawn."""
    if state(session, consent.id) != ACTIVE:
        raise NotActive("This consent has already been withdrawn.")
    event = ConsentEvent(consent_id=consent.id, kind=WITHDRAWN, detail={"erase": erase})
    session.add(event)
    session.flush()
    return event


def state(session: Session, consent_id: str) -> str:
    return states(session, [consent_id]).get(consent_id, ACTIVE)


def states(session: Session, consent_ids: Iterable[str]) -> dict[str, str]:
    """Current state of each consent, derived from its latest event."""
    ids = list(consent_ids)
    if not ids:
        return {}
    query = (
        select(ConsentEvent.consent_id, ConsentEvent.kind)
        .where(ConsentEvent.consent_id.in_(ids))
        .order_by(ConsentEvent.consent_id, ConsentEvent.id)
    )
    result = {consent_id: ACTIVE for consent_id in ids}
    for consent_id, kind in session.execute(query):
        result[consent_id] = WITHDRAWN if kind == WITHDRAWN else ACTIVE
    return result


def active_consent(session: Session, subject_ref: str) -> Consent | None:
    """The subject's most recent consent that is still active."""
    query = (
        select(Consent).where(Consent.subject_ref == subject_ref).order_by(Consent.signed_at.desc())
    )
    consents = list(session.scalars(query))
    current = states(session, [c.id for c in consents])
    return next((c for c in consents if current[c.id] == ACTIVE), None)


def withdrawn_ids(session: Session) -> set[str]:
    query = select(ConsentEvent.consent_id).where(ConsentEvent.kind == WITHDRAWN)
    return set(session.scalars(query))
