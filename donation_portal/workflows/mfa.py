"""Second factors: an authenticator app (TOTP, RFC 6238) and single-use recovery codes;
security keys, the other option, are in ``security_keys``.

Stewards, admins and researchers must have one (the web layer sends them to enrol before
anything else); donors may. Each use case here commits and audits itself (``auth.mfa_*``),
and never records a code, a secret or a recovery code, only what happened.

A TOTP code is accepted for the current 30-second step and one step either side (clocks
drift), but only for a step later than the last one accepted: an overheard or replayed code
is refused, and the refusal audited. The secret is sealed under a key the web layer derives
from the app's secret key, bound to its account, so a database copy alone mints no codes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import NoReturn

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.mfa_models import (
    RecoveryCode,
    SecurityKey,
    SecurityKeyChallenge,
    TotpCredential,
)
from donation_portal.adapters.models import User
from donation_portal.workflows import accounts

ISSUER = "Data donation portal"
STEP_SECONDS = 30
DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10
REQUIRED_ROLES = ("steward", "admin", "researcher")
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
_RECOVERY_LENGTH = 16  # 31**16: 79 bits
_SEAL_LABEL = b"donation-portal totp secret"


class SecondFactorError(Exception):
    """A code was refused or an operation is not possible; the message is safe to show."""


@dataclass(frozen=True)
class Enrolment:
    """What the user copies into their app: the secret (base32) and the same as a URI."""

    secret: str
    uri: str


def seal_key(app_secret: bytes) -> bytes:
    """The key that seals TOTP secrets, derived from the app's secret key so that it needs
    no key file of its own (changing the secret key means every user enrols again)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_LABEL).derive(
        app_secret
    )


def required_for(user: User) -> bool:
    return user.role in REQUIRED_ROLES


def is_enrolled(session: Session, user: User) -> bool:
    """Whether ``user`` has a second factor: a confirmed app, a security key, or both."""
    return has_app(session, user) or has_security_key(session, user)


def has_app(session: Session, user: User) -> bool:
    credential = session.get(TotpCredential, user.id)
    return credential is not None and credential.confirmed_at is not None


def has_security_key(session: Session, user: User) -> bool:
    return (
        session.scalar(select(SecurityKey.id).where(SecurityKey.user_id == user.id).limit(1))
        is not None
    )


def begin_totp(session: Session, user: User, *, key: bytes) -> Enrolment:
    """A new secret for ``user`` to copy into their app. It replaces their current app (if
    any) only when ``confirm_totp`` sees a code from it. Commits."""
    secret = pyotp.random_base32(32)  # 160 bits, as RFC 4226 recommends
    begin_write(session)
    credential = session.get(TotpCredential, user.id, with_for_update=True)
    if credential is None:
        credential = TotpCredential(user_id=user.id)
        session.add(credential)
    credential.pending_secret = _seal(key, user.id, secret)
    credential.pending_since = utcnow()
    session.commit()
    uri = pyotp.TOTP(secret).provisioning_uri(name=f"account {user.id}", issuer_name=ISSUER)
    return Enrolment(secret=secret, uri=uri)


def confirm_totp(session: Session, user: User, code: str, *, key: bytes, at: float) -> list[str]:
    """Confirm the app that ``begin_totp`` set up with one of its codes; returns ten new
    recovery codes (shown once; earlier ones stop working). Commits."""
    begin_write(session)
    credential = session.get(TotpCredential, user.id, with_for_update=True)
    if credential is None or credential.pending_secret is None:
        session.rollback()
        raise SecondFactorError("Please start setting up the app again.")
    secret = _unseal(key, user.id, credential.pending_secret)
    step = _matching_step(secret, code, at)
    if step is None:
        session.rollback()
        raise SecondFactorError("That code is not right. Please type the code the app shows now.")
    credential.secret, credential.pending_secret = credential.pending_secret, None
    credential.pending_since = None
    credential.confirmed_at = utcnow()
    credential.last_step = step
    codes = replace_recovery_codes(session, user)
    accounts.audit(session, "auth.mfa_enrolled", user, {"factor": "totp"})
    session.commit()
    return codes


def enrol_without_code(session: Session, user: User, *, key: bytes, at: float) -> str:
    """Give ``user`` a confirmed app at once, for set-up scripts (the demo accounts) that
    print the key for whoever runs them; returns the key. It is confirmed with a code of an
    hour before ``at``, so every code from ``at`` on is still unused. Commits."""
    secret = begin_totp(session, user, key=key).secret
    earlier = at - 3600
    confirm_totp(session, user, pyotp.TOTP(secret).at(int(earlier)), key=key, at=earlier)
    return secret


def verify(session: Session, user: User, code: str, *, key: bytes, at: float) -> str:
    """Check a second factor of ``user``: a code from their app or an unused recovery code.
    Returns which (``totp`` or ``recovery``); SecondFactorError if refused. Commits, and
    audits the outcome either way."""
    begin_write(session)
    credential = session.get(TotpCredential, user.id, with_for_update=True)
    has_secret = credential is not None and credential.secret is not None
    if not has_secret and not has_security_key(session, user):
        session.rollback()
        raise SecondFactorError("This account has no second factor set up.")
    compact = _compact(code)
    if len(compact) == 6 and compact.isdigit():
        if credential is None or not has_secret:  # only security keys: no code can be right
            _refuse(session, user, "wrong-code")
        return _verify_totp(session, user, credential, compact, key=key, at=at)
    return _verify_recovery(session, user, compact)


def recovery_codes_left(session: Session, user: User) -> int:
    query = select(func.count()).where(
        RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
    )
    return int(session.scalar(query) or 0)


def new_recovery_codes(session: Session, user: User) -> list[str]:
    """Ten new recovery codes for an enrolled ``user``; the earlier ones stop working.
    Commits."""
    begin_write(session)
    if not is_enrolled(session, user):
        session.rollback()
        raise SecondFactorError("Set up a second factor first.")
    codes = replace_recovery_codes(session, user)
    accounts.audit(session, "auth.mfa_recovery_codes_renewed", user)
    session.commit()
    return codes


def remove(session: Session, user: User) -> None:
    """Remove every second factor (app and security keys) of a user who may go without one
    (a donor). Commits."""
    if required_for(user):
        raise SecondFactorError("Your role needs a second factor; you can replace it instead.")
    begin_write(session)
    for table in (TotpCredential, SecurityKey, SecurityKeyChallenge, RecoveryCode):
        session.execute(delete(table).where(table.user_id == user.id))
    accounts.audit(session, "auth.mfa_removed", user)
    session.commit()


def _verify_totp(
    session: Session,
    user: User,
    credential: TotpCredential,
    code: str,
    *,
    key: bytes,
    at: float,
) -> str:
    assert credential.secret is not None
    secret = _unseal(key, user.id, credential.secret)
    step = _matching_step(secret, code, at)
    if step is None:
        _refuse(session, user, "wrong-code")
    if credential.last_step is not None and step <= credential.last_step:
        _refuse(session, user, "replayed-code")
    credential.last_step = step
    accounts.audit(session, "auth.mfa_verified", user, {"factor": "totp"})
    session.commit()
    return "totp"


def _verify_recovery(session: Session, user: User, code: str) -> str:
    used = session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == _hash_code(code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        _refuse(session, user, "wrong-recovery-code")
    accounts.audit(session, "auth.mfa_verified", user, {"factor": "recovery-code"})
    session.commit()
    return "recovery"


def _refuse(session: Session, user: User, reason: str) -> NoReturn:
    """Record a refused code (only the reason, never the code) and raise."""
    session.rollback()
    begin_write(session)
    accounts.audit(session, "auth.mfa_failed", user, {"reason": reason})
    session.commit()
    if reason == "replayed-code":
        raise SecondFactorError("That code was used already. Please wait for the next one.")
    raise SecondFactorError("That code is not right. Please try again.")


def _matching_step(secret: str, code: str, at: float) -> int | None:
    """The time step within the allowed drift whose code is ``code``, or None. Every step
    is compared (in constant time), so the answer's timing does not tell which was near."""
    code = _compact(code)
    totp = pyotp.TOTP(secret)
    now_step = int(at) // STEP_SECONDS
    found = None
    for step in range(now_step - DRIFT_STEPS, now_step + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code) and found is None:
            found = step
    return found


def replace_recovery_codes(session: Session, user: User) -> list[str]:
    """Ten new recovery codes in place of ``user``'s earlier ones, as typed (grouped by
    four); does not commit."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    session.add_all(RecoveryCode(user_id=user.id, code_hash=_hash_code(c)) for c in codes)
    session.flush()
    return [f"{c[:4]}-{c[4:8]}-{c[8:12]}-{c[12:]}" for c in codes]


def _new_recovery_code() -> str:
    return "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))


def _compact(code: str) -> str:
    """A code as typed, without the spaces and dashes people add, in lower case."""
    return "".join(code.split()).replace("-", "").lower()[:64]


def _hash_code(code: str) -> str:
    return hashlib.sha256(_compact(code).encode("ascii", "replace")).hexdigest()


def _seal(key: bytes, user_id: int, secret: str) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, secret.encode("ascii"), _bound(user_id))


def _unseal(key: bytes, user_id: int, sealed: bytes) -> str:
    try:
        plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], _bound(user_id))
    except InvalidTag as exc:  # the secret key changed, or the row was moved to another user
        raise SecondFactorError(
            "Your authenticator app can no longer be checked. Please use a recovery code."
        ) from exc
    return plain.decode("ascii")


def _bound(user_id: int) -> bytes:
    """Binds a sealed secret to its account: copying it to another row makes it unreadable."""
    return b"totp-secret:user:%d" % user_id
