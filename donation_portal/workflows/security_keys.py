"""Security keys (WebAuthn), the second factor beside an authenticator app.

A key is bound to the portal's domain (the relying party ID) by the browser, so a look-alike
site cannot use what it signs: that is what makes a key stronger than a typed code. Each
ceremony (registering a key, signing with one) answers a challenge the server chose and keeps
in ``security_key_challenges``: one per account, for ``CHALLENGE_SECONDS``, deleted as soon
as it is answered, right or wrong, so no response is accepted twice.

Keys count their signatures; one whose counter does not go up was cloned (or its answer
replayed), and is refused and audited as ``sign-count-not-increased``. Keys that do not count
(they always say 0) are accepted as they are. Everything here commits and audits itself
(``auth.mfa_*``, with the factor ``webauthn``) and records neither keys nor challenges.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import webauthn
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from webauthn.helpers import (
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.mfa_models import RecoveryCode, SecurityKey, SecurityKeyChallenge
from donation_portal.adapters.models import User
from donation_portal.workflows import accounts, mfa
from donation_portal.workflows.mfa import SecondFactorError

CHALLENGE_SECONDS = 120
TIMEOUT_MS = 90_000  # how long the browser waits for a touch: less than the challenge lives
MAX_NAME = 64
MAX_KEYS = 10
_REGISTER, _SIGN = "register", "sign"


@dataclass(frozen=True)
class RelyingParty:
    """Where keys are used: ``id`` is the domain they are bound to (``portal.example.org``),
    ``origin`` the address browsers show (``https://portal.example.org``)."""

    id: str
    origin: str
    name: str = mfa.ISSUER


def keys_of(session: Session, user: User) -> list[SecurityKey]:
    query = select(SecurityKey).where(SecurityKey.user_id == user.id).order_by(SecurityKey.id)
    return list(session.scalars(query))


def registration_options(session: Session, user: User, rp: RelyingParty, *, at: float) -> str:
    """The options (JSON) for ``navigator.credentials.create``, with a fresh challenge; keys
    the account has already are excluded, so one key is not registered twice. Commits."""
    begin_write(session)
    keys = keys_of(session, user)
    if len(keys) >= MAX_KEYS:
        session.rollback()
        raise SecondFactorError(f"An account can have {MAX_KEYS} security keys at most.")
    options = webauthn.generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=b"user:%d" % user.id,
        user_name=f"account {user.id}",  # shown by some keys: no e-mail address on them
        challenge=_keep_challenge(session, user, _REGISTER, at),
        timeout=TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.DISCOURAGED,  # the password was typed
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=k.credential_id) for k in keys],
    )
    session.commit()
    return webauthn.options_to_json(options)


def register(
    session: Session, user: User, rp: RelyingParty, response: str, name: str, *, at: float
) -> list[str] | None:
    """Register the key that answered ``registration_options`` under ``name``. Returns ten
    recovery codes if it is the account's first second factor (None if it had one: its codes
    stay). SecondFactorError if the answer is refused. Commits."""
    challenge = _take_challenge(session, user, _REGISTER, at)
    if challenge is None:
        raise SecondFactorError("That took too long. Please try again.")
    try:
        verified = webauthn.verify_registration_response(
            credential=parse_registration_credential_json(response),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
        )
    except (WebAuthnException, ValueError) as exc:
        raise SecondFactorError("The security key could not be registered.") from exc
    begin_write(session)
    known = select(SecurityKey.id).where(SecurityKey.credential_id == verified.credential_id)
    if session.scalar(known) is not None:
        session.rollback()
        raise SecondFactorError("This security key is registered already.")
    first = not mfa.is_enrolled(session, user)
    session.add(
        SecurityKey(
            user_id=user.id,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            name=_clean_name(name, session, user),
        )
    )
    codes = mfa.replace_recovery_codes(session, user) if first else None
    accounts.audit(session, "auth.mfa_enrolled", user, {"factor": "webauthn"})
    session.commit()
    return codes


def authentication_options(session: Session, user: User, rp: RelyingParty, *, at: float) -> str:
    """The options (JSON) for ``navigator.credentials.get``: a fresh challenge, and the
    account's keys as the only ones allowed. Commits."""
    begin_write(session)
    keys = keys_of(session, user)
    if not keys:
        session.rollback()
        raise SecondFactorError("This account has no security key.")
    options = webauthn.generate_authentication_options(
        rp_id=rp.id,
        challenge=_keep_challenge(session, user, _SIGN, at),
        timeout=TIMEOUT_MS,
        allow_credentials=[PublicKeyCredentialDescriptor(id=k.credential_id) for k in keys],
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    session.commit()
    return webauthn.options_to_json(options)


def verify(session: Session, user: User, rp: RelyingParty, response: str, *, at: float) -> None:
    """Check a key's answer to ``authentication_options``; SecondFactorError if refused.
    Commits, and audits the outcome either way."""
    challenge = _take_challenge(session, user, _SIGN, at)
    begin_write(session)
    if challenge is None:
        _refuse(session, user, "stale-challenge")
    try:
        credential = parse_authentication_credential_json(response)
    except (WebAuthnException, ValueError):
        _refuse(session, user, "malformed-response")
    key = session.scalar(
        select(SecurityKey)
        .where(SecurityKey.user_id == user.id, SecurityKey.credential_id == credential.raw_id)
        .with_for_update()
    )
    if key is None:
        _refuse(session, user, "unknown-key")
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=key.public_key,
            credential_current_sign_count=0,  # compared below, to audit a clone as such
        )
    except (WebAuthnException, ValueError):
        _refuse(session, user, "invalid-response")
    counts = verified.new_sign_count > 0 or key.sign_count > 0
    if counts and verified.new_sign_count <= key.sign_count:
        _refuse(session, user, "sign-count-not-increased")
    key.sign_count = verified.new_sign_count
    key.last_used_at = utcnow()
    accounts.audit(session, "auth.mfa_verified", user, {"factor": "webauthn"})
    session.commit()


def remove(session: Session, user: User, key_id: int) -> str:
    """Remove one of ``user``'s keys; returns its name. Refused if it is the last second
    factor of a role that needs one. Commits."""
    begin_write(session)
    key = session.scalar(
        select(SecurityKey)
        .where(SecurityKey.id == key_id, SecurityKey.user_id == user.id)
        .with_for_update()
    )
    if key is None:
        session.rollback()
        raise SecondFactorError("There is no such security key.")
    name = key.name
    session.delete(key)
    session.flush()
    if not mfa.is_enrolled(session, user):
        if mfa.required_for(user):
            session.rollback()
            raise SecondFactorError(
                "Your role needs a second factor: add another key or an app before removing this."
            )
        # no factor left: its recovery codes go with it, as ``mfa.remove`` does
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    accounts.audit(session, "auth.mfa_removed", user, {"factor": "webauthn"})
    session.commit()
    return name


def _keep_challenge(session: Session, user: User, purpose: str, at: float) -> bytes:
    """A new challenge for ``user``, in place of any unanswered one, in the write transaction
    begun; does not commit."""
    challenge = secrets.token_bytes(32)
    session.execute(delete(SecurityKeyChallenge).where(SecurityKeyChallenge.user_id == user.id))
    expires = datetime.fromtimestamp(at, UTC) + timedelta(seconds=CHALLENGE_SECONDS)
    session.add(
        SecurityKeyChallenge(
            user_id=user.id, purpose=purpose, challenge=challenge, expires_at=expires
        )
    )
    session.flush()
    return challenge


def _take_challenge(session: Session, user: User, purpose: str, at: float) -> bytes | None:
    """``user``'s challenge for ``purpose`` if one is unanswered and fresh, else None. Any
    challenge of theirs is deleted (and that committed) first: each is answered only once."""
    begin_write(session)
    row = session.get(SecurityKeyChallenge, user.id, with_for_update=True)
    found = None
    if row is not None:
        fresh = _aware(row.expires_at) > datetime.fromtimestamp(at, UTC)
        found = row.challenge if fresh and row.purpose == purpose else None
        session.delete(row)
    session.commit()
    return found


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes (in UTC); PostgreSQL aware ones."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _clean_name(name: str, session: Session, user: User) -> str:
    """The name as typed, on one line and at most ``MAX_NAME`` characters, or a numbered
    default for an empty one."""
    cleaned = " ".join(name.split())[:MAX_NAME]
    if cleaned:
        return cleaned
    count = session.scalar(select(func.count()).where(SecurityKey.user_id == user.id))
    return f"Security key {int(count or 0) + 1}"


def _refuse(session: Session, user: User, reason: str) -> NoReturn:
    """Record a refused answer (the reason only) and raise."""
    session.rollback()
    begin_write(session)
    accounts.audit(session, "auth.mfa_failed", user, {"reason": reason, "factor": "webauthn"})
    session.commit()
    raise SecondFactorError("The security key's answer was refused. Please try again.")
