"""Giving, withdrawing and renewing consent. State is derived from the append-only events.

Every event is also written to the audit trail (``consent.<kind>``) in the same transaction,
with an opaque actor; so callers never need to audit consent events themselves.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent import audit
from consent.canonical import as_utc
from consent.codes import code_hash, code_matches, new_withdrawal_code
from consent.db import utcnow
from consent.errors import (
    AlreadyWithdrawn,
    InvalidModule,
    InvalidSignature,
    NotActive,
    NoTemplate,
    UnknownConsent,
    WrongWithdrawalCode,
)
from consent.models import Consent, ConsentEvent, ConsentTemplate
from consent.sealing import Sealer
from consent.templates import current_template, ensure_signable

GIVEN = "given"
MODULE_WITHDRAWN = "module_withdrawn"
WITHDRAWN = "withdrawn"
EXPIRED = "expired"
SUPERSEDED = "superseded"

ACTIVE = "active"

STOP_USE = "stop_use"
ERASE = "erase"
WITHDRAWAL_MODES = (STOP_USE, ERASE)
CODE_HOLDER = "withdrawal-code"

_PSEUDONYM_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CONSENT_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def new_pseudonym() -> str:
    """A random donor pseudonym; it carries no information about the donor."""
    return "DONOR-" + "".join(secrets.choice(_PSEUDONYM_ALPHABET) for _ in range(12))


def new_consent_id() -> str:
    """130 random bits in lower-case base32: unguessable, URL- and FHIR-id-safe."""
    return "".join(secrets.choice(_CONSENT_ID_ALPHABET) for _ in range(26))


@dataclass(frozen=True)
class SignedConsent:
    """A new consent with the withdrawal code to hand to the donor once (only its hash is kept)."""

    consent: Consent
    event: ConsentEvent
    withdrawal_code: str


@dataclass(frozen=True)
class Withdrawal:
    """A full withdrawal: ``events[0]`` is the consent asked for, then those it superseded."""

    consent: Consent
    mode: str
    events: list[ConsentEvent]

    @property
    def event(self) -> ConsentEvent:
        return self.events[0]

    @property
    def consent_ids(self) -> list[str]:
        """Every consent whose data must stop being used (and be erased, in mode ``erase``)."""
        return [event.consent_id for event in self.events]


def _add_event(
    session: Session, consent_id: str, kind: str, detail: dict[str, Any], actor: str
) -> ConsentEvent:
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


def _check_choice(template: ConsentTemplate, modules: Collection[str], typed_name: str) -> None:
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


def sign_consent(
    session: Session,
    *,
    subject_ref: str,
    template: ConsentTemplate,
    modules: Collection[str],
    typed_name: str,
    sealer: Sealer,
    actor: str | None = None,
    supersedes: Consent | None = None,
) -> SignedConsent:
    """Record a signed consent and issue its withdrawal code.

    Raises NotSignable for an unpublished, altered, not yet valid or expired template and
    InvalidSignature for a bad choice of modules or an empty name. The typed name is sealed
    (encrypted, bound to the consent ID) and appears in no event, audit entry or receipt.
    """
    now = utcnow()
    ensure_signable(session, template, now)
    _check_choice(template, modules, typed_name)
    consent_id = new_consent_id()
    code = new_withdrawal_code()
    chosen = sorted(set(modules))
    expires_at = None
    if template.consent_valid_days:
        expires_at = now + timedelta(days=template.consent_valid_days)
    consent = Consent(
        id=consent_id,
        subject_ref=subject_ref,
        pseudonym=new_pseudonym(),
        template_id=template.id,
        modules=chosen,
        signature_sealed=sealer.seal(typed_name.strip(), context=consent_id),
        signed_at=now,
        expires_at=expires_at,
        withdrawal_code_hash=code_hash(consent_id, code),
        supersedes_id=supersedes.id if supersedes is not None else None,
    )
    session.add(consent)
    session.flush()
    detail: dict[str, Any] = {"template_id": template.id, "modules": chosen}
    if supersedes is not None:
        detail["supersedes"] = supersedes.id
    event = _add_event(session, consent_id, GIVEN, detail, actor or subject_ref)
    return SignedConsent(consent=consent, event=event, withdrawal_code=code)


def give_consent(
    session: Session,
    *,
    subject_ref: str,
    template: ConsentTemplate,
    modules: Collection[str],
    typed_name: str,
    sealer: Sealer,
) -> Consent:
    """Record a signed consent (see sign_consent, which also returns the withdrawal code)."""
    return sign_consent(
        session,
        subject_ref=subject_ref,
        template=template,
        modules=modules,
        typed_name=typed_name,
        sealer=sealer,
    ).consent


def get_consent(session: Session, consent_id: str) -> Consent:
    """The consent with this ID, or UnknownConsent."""
    consent = session.get(Consent, consent_id) if isinstance(consent_id, str) else None
    if consent is None:
        raise UnknownConsent("No consent has this ID. Please check it against your receipt.")
    return consent


def events(session: Session, consent_id: str) -> list[ConsentEvent]:
    """The consent's history, oldest first."""
    query = (
        select(ConsentEvent).where(ConsentEvent.consent_id == consent_id).order_by(ConsentEvent.id)
    )
    return list(session.scalars(query))


def states(
    session: Session, consent_ids: Iterable[str], at: datetime | None = None
) -> dict[str, str]:
    """Current state of each consent: withdrawn > expired > superseded > active.

    A consent past its ``expires_at`` is expired even before an ``expired`` event is recorded
    (see expire_due). Unknown IDs are reported active, as before.
    """
    ids = list(dict.fromkeys(consent_ids))
    if not ids:
        return {}
    moment = as_utc(at or utcnow())
    kinds: dict[str, set[str]] = {consent_id: set() for consent_id in ids}
    query = select(ConsentEvent.consent_id, ConsentEvent.kind).where(
        ConsentEvent.consent_id.in_(ids)
    )
    for consent_id, kind in session.execute(query):
        kinds[consent_id].add(kind)
    expiry = dict(
        session.execute(select(Consent.id, Consent.expires_at).where(Consent.id.in_(ids))).all()
    )
    result = {}
    for consent_id in ids:
        seen = kinds[consent_id]
        expires_at = expiry.get(consent_id)
        if WITHDRAWN in seen:
            result[consent_id] = WITHDRAWN
        elif EXPIRED in seen or (expires_at is not None and as_utc(expires_at) <= moment):
            result[consent_id] = EXPIRED
        elif SUPERSEDED in seen:
            result[consent_id] = SUPERSEDED
        else:
            result[consent_id] = ACTIVE
    return result


def state(session: Session, consent_id: str) -> str:
    return states(session, [consent_id]).get(consent_id, ACTIVE)


def in_force(session: Session, consent_id: str) -> bool:
    """Whether data given under the consent may still be used (active or superseded)."""
    return state(session, consent_id) in (ACTIVE, SUPERSEDED)


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


def excluded_ids(session: Session, at: datetime | None = None) -> set[str]:
    """Consents whose data must not be used any more: withdrawn or expired."""
    moment = as_utc(at or utcnow())
    ended = set(
        session.scalars(
            select(ConsentEvent.consent_id).where(ConsentEvent.kind.in_((WITHDRAWN, EXPIRED)))
        )
    )
    lapsed = session.scalars(
        select(Consent.id).where(Consent.expires_at.is_not(None), Consent.expires_at <= moment)
    )
    return ended | set(lapsed)


def _withdrawn_modules(session: Session, consent_id: str) -> set[str]:
    query = select(ConsentEvent.detail).where(
        ConsentEvent.consent_id == consent_id, ConsentEvent.kind == MODULE_WITHDRAWN
    )
    return {detail["module"] for detail in session.scalars(query)}


def granted_modules(session: Session, consent_id: str) -> list[str]:
    """Modules in force: those signed, minus those withdrawn; none once withdrawn or expired."""
    consent = get_consent(session, consent_id)
    if state(session, consent_id) in (WITHDRAWN, EXPIRED):
        return []
    withdrawn = _withdrawn_modules(session, consent_id)
    return [module for module in consent.modules if module not in withdrawn]


def duo_terms(session: Session, consent_id: str) -> list[str]:
    """The DUO terms the consent grants now (permissions and modifiers), sorted."""
    consent = get_consent(session, consent_id)
    granted = set(granted_modules(session, consent_id))
    template = session.get(ConsentTemplate, consent.template_id)
    assert template is not None  # noqa: S101 - guaranteed by the foreign key
    terms = {term for m in template.modules if m["id"] in granted for term in m.get("duo", [])}
    return sorted(terms)


def _withdrawable_module(session: Session, consent: Consent, module_id: str) -> dict[str, Any]:
    """The template's module ``module_id`` if it can be withdrawn alone; InvalidModule else."""
    current = state(session, consent.id)
    if current == WITHDRAWN:
        raise AlreadyWithdrawn("This consent has already been withdrawn.")
    if current == EXPIRED:
        raise NotActive("This consent has expired; there is nothing left to withdraw.")
    template = session.get(ConsentTemplate, consent.template_id)
    assert template is not None  # noqa: S101 - guaranteed by the foreign key
    module = next((m for m in template.modules if m["id"] == module_id), None)
    if module is None or module_id not in consent.modules:
        raise InvalidModule("This part was not agreed to in this consent.")
    if module_id in _withdrawn_modules(session, consent.id):
        raise InvalidModule("This part has already been withdrawn.")
    if module.get("required"):
        raise InvalidModule(
            "This part is required for the consent; to withdraw it, withdraw the whole consent."
        )
    return module


def withdraw_modules(
    session: Session, consent_id: str, module_ids: Collection[str], *, actor: str | None = None
) -> list[ConsentEvent]:
    """Withdraw optional modules; all are checked first, so an error records nothing.

    A required module can only go with the whole consent (InvalidModule says so). The
    earlier consents this one superseded, which still cover the data given under them,
    lose the module too: the donor withdraws a purpose, not one version of its wording.
    """
    consent = get_consent(session, consent_id)
    chosen = sorted(set(module_ids))
    if not chosen:
        raise InvalidModule("Please choose the part(s) to withdraw.")
    modules = [_withdrawable_module(session, consent, module_id) for module_id in chosen]
    subject = actor or consent.subject_ref
    events = [
        _add_event(
            session,
            consent.id,
            MODULE_WITHDRAWN,
            {"module": module["id"], "duo": list(module.get("duo", []))},
            subject,
        )
        for module in modules
    ]
    for earlier in _chain(session, consent)[1:]:
        granted = set(granted_modules(session, earlier.id))
        template = session.get(ConsentTemplate, earlier.template_id)
        assert template is not None  # noqa: S101 - guaranteed by the foreign key
        for module in template.modules:
            if module["id"] in chosen and module["id"] in granted:
                detail = {"module": module["id"], "duo": list(module.get("duo", [])),
                          "via": consent.id}
                events.append(_add_event(session, earlier.id, MODULE_WITHDRAWN, detail, subject))
    return events


def withdraw_module(
    session: Session, consent_id: str, module_id: str, *, actor: str | None = None
) -> ConsentEvent:
    """Withdraw one optional module (see withdraw_modules)."""
    return withdraw_modules(session, consent_id, [module_id], actor=actor)[0]


def _chain(session: Session, consent: Consent) -> list[Consent]:
    """The consent and, following ``supersedes_id``, each earlier one it replaced."""
    chain = [consent]
    while chain[-1].supersedes_id is not None and len(chain) < 1000:
        chain.append(get_consent(session, chain[-1].supersedes_id))
    return chain


def withdraw_consent(
    session: Session, consent_id: str, *, mode: str = STOP_USE, actor: str | None = None
) -> Withdrawal:
    """Withdraw a whole consent, and the earlier consents it superseded (still in force).

    ``mode`` is ``stop_use`` (files kept, never used again) or ``erase`` (the caller shreds
    the files of every ID in ``Withdrawal.consent_ids`` in the same transaction).
    Raises AlreadyWithdrawn when the consent was withdrawn before; nothing changes then.
    """
    if mode not in WITHDRAWAL_MODES:
        raise ValueError(f"withdrawal mode must be one of {', '.join(WITHDRAWAL_MODES)}")
    consent = get_consent(session, consent_id)
    chain = _chain(session, consent)
    current = states(session, [c.id for c in chain])
    if current[consent.id] == WITHDRAWN:
        raise AlreadyWithdrawn("This consent has already been withdrawn.")
    detail = {"mode": mode, "erase": mode == ERASE}
    recorded = []
    for item in chain:
        if current[item.id] == WITHDRAWN:
            continue
        item_detail = detail if item is consent else {**detail, "via": consent.id}
        recorded.append(
            _add_event(session, item.id, WITHDRAWN, item_detail, actor or consent.subject_ref)
        )
    return Withdrawal(consent=consent, mode=mode, events=recorded)


def withdraw(session: Session, consent: Consent, *, erase: bool) -> ConsentEvent:
    """Withdraw the whole consent. Raises NotActive when it was already withdrawn."""
    mode = ERASE if erase else STOP_USE
    return withdraw_consent(session, consent.id, mode=mode).event


def check_withdrawal_code(session: Session, consent_id: str, code: str) -> Consent:
    """The consent if ``code`` is its withdrawal code; UnknownConsent/WrongWithdrawalCode else."""
    consent = get_consent(session, consent_id)
    if not isinstance(code, str) or not code_matches(
        consent.id, code, consent.withdrawal_code_hash
    ):
        raise WrongWithdrawalCode("This withdrawal code does not belong to this consent.")
    return consent


def withdraw_with_code(
    session: Session,
    consent_id: str,
    code: str,
    *,
    mode: str = STOP_USE,
    modules: Collection[str] | None = None,
) -> Withdrawal | list[ConsentEvent]:
    """Withdraw without login, proven by the code from the signing receipt.

    With ``modules``, withdraws only those optional modules (returns their events); otherwise
    the whole consent (returns the Withdrawal). Errors: UnknownConsent, WrongWithdrawalCode,
    AlreadyWithdrawn (the code was used for a full withdrawal already), InvalidModule; in
    every error case nothing is recorded.
    """
    consent = check_withdrawal_code(session, consent_id, code)
    if not modules:
        return withdraw_consent(session, consent.id, mode=mode, actor=CODE_HOLDER)
    return withdraw_modules(session, consent.id, modules, actor=CODE_HOLDER)


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
    signed = session.get(ConsentTemplate, consent.template_id)
    assert signed is not None  # noqa: S101 - guaranteed by the foreign key
    try:
        latest = current_template(session, language, name=signed.name)
    except NoTemplate:
        return None
    if latest.version == signed.version:
        return None  # the same version, possibly a translation of it
    if as_utc(latest.published_at) <= as_utc(signed.published_at):
        return None
    return latest


def reconsent(
    session: Session,
    *,
    previous: Consent,
    template: ConsentTemplate,
    modules: Collection[str],
    typed_name: str,
    sealer: Sealer,
    actor: str | None = None,
) -> SignedConsent:
    """Sign a newer template version; the previous consent is recorded as superseded.

    The superseded consent stays in force for the data given under it until it expires or
    is withdrawn (withdrawing the new consent withdraws it too).
    """
    current = state(session, previous.id)
    if current != ACTIVE:
        raise NotActive("Only an active consent can be renewed.")
    if template.id == previous.template_id:
        raise InvalidSignature("This consent already uses this version of the text.")
    signed = sign_consent(
        session,
        subject_ref=previous.subject_ref,
        template=template,
        modules=modules,
        typed_name=typed_name,
        sealer=sealer,
        actor=actor,
        supersedes=previous,
    )
    _add_event(
        session,
        previous.id,
        SUPERSEDED,
        {"by": signed.consent.id, "template_id": template.id},
        actor or previous.subject_ref,
    )
    return signed


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
    return [c for c in found if current[c.id] in (ACTIVE, SUPERSEDED)]


def expire_due(session: Session, at: datetime | None = None) -> list[ConsentEvent]:
    """Record ``expired`` for every consent past its expiry that has no such event yet."""
    moment = as_utc(at or utcnow())
    query = select(Consent.id).where(Consent.expires_at.is_not(None), Consent.expires_at <= moment)
    due = list(session.scalars(query))
    recorded = []
    for consent_id, kind in _latest_terminal(session, due).items():
        if kind is None:
            recorded.append(_add_event(session, consent_id, EXPIRED, {}, audit.SYSTEM))
    return recorded


def _latest_terminal(session: Session, consent_ids: list[str]) -> dict[str, str | None]:
    result: dict[str, str | None] = dict.fromkeys(consent_ids)
    if not consent_ids:
        return result
    query = select(ConsentEvent.consent_id, ConsentEvent.kind).where(
        ConsentEvent.consent_id.in_(consent_ids),
        ConsentEvent.kind.in_((WITHDRAWN, EXPIRED)),
    )
    for consent_id, kind in session.execute(query):
        result[consent_id] = kind
    return result
