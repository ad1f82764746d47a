"""Signing a consent, and signing a newer template version in place of an active consent.

A consent row is written once, at signing, and never changed: everything after is an event
(see ``consent.event_log``). The donor's typed name is sealed, bound to the consent ID, and
the withdrawal code is handed out once; only its hash is kept.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from consent.codes import code_hash, new_withdrawal_code
from consent.db import utcnow
from consent.errors import InvalidSignature, NotActive
from consent.event_log import append_event
from consent.models import Consent, ConsentEvent, ConsentTemplate
from consent.policy import ACTIVE, GIVEN, SUPERSEDED
from consent.queries import state
from consent.sealing import Sealer
from consent.templates import ensure_signable

_PSEUDONYM_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CONSENT_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass(frozen=True)
class SignedConsent:
    """A new consent with the withdrawal code to hand to the donor once (only its hash is kept)."""

    consent: Consent
    event: ConsentEvent
    withdrawal_code: str


def new_pseudonym() -> str:
    """A random donor pseudonym; it carries no information about the donor."""
    return "DONOR-" + "".join(secrets.choice(_PSEUDONYM_ALPHABET) for _ in range(12))


def new_consent_id() -> str:
    """130 random bits in lower-case base32: unguessable, URL- and FHIR-id-safe."""
    return "".join(secrets.choice(_CONSENT_ID_ALPHABET) for _ in range(26))


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
    event = append_event(session, consent_id, GIVEN, detail, actor or subject_ref)
    return SignedConsent(consent=consent, event=event, withdrawal_code=code)


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
    if state(session, previous.id) != ACTIVE:
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
    append_event(
        session,
        previous.id,
        SUPERSEDED,
        {"by": signed.consent.id, "template_id": template.id},
        actor or previous.subject_ref,
    )
    return signed
