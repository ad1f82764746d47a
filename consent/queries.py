"""Reading consents: the records, their history, and what ``consent.policy`` derives from it.

Nothing here writes. An ID no consent has raises UnknownConsent wherever one is asked about.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.canonical import as_utc
from consent.db import utcnow
from consent.errors import NoTemplate, UnknownConsent
from consent.models import Consent, ConsentEvent, ConsentTemplate
from consent.policy import (
    ACTIVE,
    ENDED,
    IN_FORCE,
    MODULE_WITHDRAWN,
    derive_states,
    modules_in_force,
)
from consent.templates import current_template

_MAX_CHAIN = 1000  # a bound on following ``supersedes_id``, against a cycle in bad data


def get_consent(session: Session, consent_id: str) -> Consent:
    """The consent with this ID, or UnknownConsent."""
    consent = session.get(Consent, consent_id) if isinstance(consent_id, str) else None
    if consent is None:
        raise UnknownConsent()
    return consent


def template_of(session: Session, consent: Consent) -> ConsentTemplate:
    """The template the consent was signed on."""
    template = session.get(ConsentTemplate, consent.template_id)
    assert template is not None  # noqa: S101 - guaranteed by the foreign key
    return template


def events(session: Session, consent_id: str) -> list[ConsentEvent]:
    """The consent's history, oldest first."""
    query = (
        select(ConsentEvent).where(ConsentEvent.consent_id == consent_id).order_by(ConsentEvent.id)
    )
    return list(session.scalars(query))


def states(
    session: Session, consent_ids: Iterable[str], at: datetime | None = None
) -> dict[str, str]:
    """The state of each consent at ``at`` (now by default); see policy.derive_state.

    Raises UnknownConsent when any of the IDs belongs to no consent.
    """
    ids = list(dict.fromkeys(consent_ids))
    if not ids:
        return {}
    kinds: dict[str, set[str]] = {}
    query = select(ConsentEvent.consent_id, ConsentEvent.kind).where(
        ConsentEvent.consent_id.in_(ids)
    )
    for consent_id, kind in session.execute(query):
        kinds.setdefault(consent_id, set()).add(kind)
    expiry = dict(
        session.execute(select(Consent.id, Consent.expires_at).where(Consent.id.in_(ids))).all()
    )
    return derive_states(ids, expiry, kinds, at or utcnow())


def state(session: Session, consent_id: str) -> str:
    """The consent's state now; UnknownConsent when no consent has this ID."""
    return states(session, [consent_id])[consent_id]


def in_force(session: Session, consent_id: str) -> bool:
    """Whether data given under the consent may still be used (active or superseded)."""
    return state(session, consent_id) in IN_FORCE


def active_consent(session: Session, subject_ref: str) -> Consent | None:
    """The subject's most recent consent that is still active."""
    query = (
        select(Consent).where(Consent.subject_ref == subject_ref).order_by(Consent.signed_at.desc())
    )
    consents = list(session.scalars(query))
    current = states(session, [c.id for c in consents])
    return next((c for c in consents if current[c.id] == ACTIVE), None)


def excluded_ids(session: Session, at: datetime | None = None) -> set[str]:
    """Consents whose data must not be used any more: withdrawn or expired."""
    moment = as_utc(at or utcnow())
    ended = set(
        session.scalars(select(ConsentEvent.consent_id).where(ConsentEvent.kind.in_(ENDED)))
    )
    lapsed = session.scalars(
        select(Consent.id).where(Consent.expires_at.is_not(None), Consent.expires_at <= moment)
    )
    return ended | set(lapsed)


def withdrawn_modules(session: Session, consent_id: str) -> set[str]:
    """The optional modules withdrawn from the consent."""
    query = select(ConsentEvent.detail).where(
        ConsentEvent.consent_id == consent_id, ConsentEvent.kind == MODULE_WITHDRAWN
    )
    return {detail["module"] for detail in session.scalars(query)}


def granted_modules(session: Session, consent_id: str) -> list[str]:
    """Modules in force: those signed, minus those withdrawn; none once withdrawn or expired."""
    consent = get_consent(session, consent_id)
    return modules_in_force(
        consent.modules,
        withdrawn_modules(session, consent_id),
        state(session, consent_id),
    )


def duo_terms(session: Session, consent_id: str) -> list[str]:
    """The DUO terms the consent grants now (permissions and modifiers), sorted."""
    template = template_of(session, get_consent(session, consent_id))
    granted = set(granted_modules(session, consent_id))
    terms = {term for m in template.modules if m["id"] in granted for term in m.get("duo", [])}
    return sorted(terms)


def superseded_chain(session: Session, consent: Consent) -> list[Consent]:
    """The consent and, following ``supersedes_id``, each earlier one it replaced."""
    chain = [consent]
    while chain[-1].supersedes_id is not None and len(chain) < _MAX_CHAIN:
        chain.append(get_consent(session, chain[-1].supersedes_id))
    return chain


def expiring(session: Session, within: timedelta, at: datetime | None = None) -> list[Consent]:
    """Active or superseded consents that expire within ``within`` (steward queue)."""
    moment = as_utc(at or utcnow())
    query = (
        select(Consent)
        .where(Consent.expires_at.is_not(None))
        .where(Consent.expires_at > moment, Consent.expires_at <= moment + within)
        .order_by(Consent.expires_at)
    )
    found = list(session.scalars(query))
    current = states(session, [c.id for c in found], at=moment)
    return [c for c in found if current[c.id] in IN_FORCE]


def needs_review(
    session: Session, subject_ref: str, language: str = "en"
) -> ConsentTemplate | None:
    """The newer template version the subject should review, or None when up to date.

    Compares the subject's active consent with the current signable template of the same
    name in ``language``; a translation of the signed version needs no review.
    """
    consent = active_consent(session, subject_ref)
    if consent is None:
        return None
    signed = template_of(session, consent)
    try:
        latest = current_template(session, language, name=signed.name)
    except NoTemplate:
        return None
    if latest.version == signed.version:
        return None  # the same version, possibly a translation of it
    if as_utc(latest.published_at) <= as_utc(signed.published_at):
        return None
    return latest
