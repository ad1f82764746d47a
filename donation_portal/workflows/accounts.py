"""Accounts: argon2id password hashes, roles, and server-side revocable sessions.

``create_user``, ``find_user`` and ``authenticate`` are services that only flush (the CLI
and setup scripts commit around them); ``register``, ``log_in``, ``log_out``,
``expire_session`` and ``record_refusal`` are the web use cases, each one unit of work that
commits.

Each authentication event is audited (``auth.*``) under an opaque reference, never an e-mail
address or a password: the account's ``user:<id>``, or for a login attempt naming no account a
keyed hash of the address (``login_pseudonym``), so repeated guesses at one address show as one
actor without the trail holding the address.
"""

from __future__ import annotations

import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import ROLES, User, user_ref

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
MIN_PASSWORD_LENGTH = 10
ANONYMOUS = "anonymous"  # the audit actor of a request that no login session or account names
_PSEUDONYM_LABEL = b"donation-portal login e-mail\x00"  # keeps these hashes apart from other uses


class AccountError(Exception):
    """An account operation was refused; the message is safe to show."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(session: Session, email: str, password: str, role: str) -> User:
    if role not in ROLES:
        raise AccountError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    email = normalise_email(email)
    if find_user(session, email) is not None:
        raise AccountError("An account with this e-mail address already exists.")
    user = User(email=email, password_hash=_hasher.hash(password), role=role, session_version=0)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, email: str) -> User | None:
    query = select(User).where(func.lower(User.email) == normalise_email(email))
    return session.scalars(query).first()


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user if the password matches; changes nothing."""
    user = find_user(session, email)
    if user is None:
        _hasher.hash(password)  # spend the same time, so timing does not reveal accounts
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


def register(session: Session, email: str, password: str) -> User:
    """A donor creates their account. Commits; AccountError (nothing stored) if refused."""
    begin_write(session)
    user = create_user(session, email, password, "donor")
    _audit(session, "auth.register", user, {"role": user.role})  # and logged in: a session begins
    session.commit()
    return user


def log_in(session: Session, email: str, password: str, *, pseudonym_key: bytes) -> User | None:
    """Check the password; on success record the login (audited) and rehash the password
    if argon2's parameters have changed. Commits; None if it is wrong, with only the failed
    attempt recorded (``pseudonym_key`` names an address that has no account)."""
    user = authenticate(session, email, password)  # slow on purpose: not under a write lock
    if user is None:
        _record_failed_login(session, email, pseudonym_key)
        return None
    new_hash = _hasher.hash(password) if _hasher.check_needs_rehash(user.password_hash) else None
    begin_write(session)
    user = session.get(User, user.id)
    if user is None:  # deleted meanwhile
        return None
    if new_hash is not None:
        user.password_hash = new_hash
    _audit(session, "auth.login", user, {"role": user.role})
    session.commit()
    return user


def login_pseudonym(key: bytes, email: str) -> str:
    """The audit's name for an e-mail address: stable across attempts (whatever its case or
    spacing), and unreadable without ``key`` (a plain hash of an address is easily reversed
    by hashing candidate addresses)."""
    message = _PSEUDONYM_LABEL + normalise_email(email).encode("utf-8")
    return "email-hmac:" + hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def _record_failed_login(session: Session, email: str, pseudonym_key: bytes) -> None:
    begin_write(session)
    user = find_user(session, email)
    if user is not None:
        _audit(session, "auth.login_failed", user, {"reason": "password"})
    else:
        pseudonym = login_pseudonym(pseudonym_key, email)
        consents.audit.record(
            session,
            "auth.login_failed",
            actor=pseudonym,
            subject_type="email-hmac",
            subject_id=pseudonym.removeprefix("email-hmac:"),
            detail={"reason": "no-account"},
        )
    session.commit()


def log_out(session: Session, user: User) -> None:
    """End every login session of ``user`` (their cookies stop working). Commits."""
    begin_write(session)
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(session_version=User.session_version + 1)
        .execution_options(synchronize_session=False)
    )
    _audit(session, "auth.logout", user)
    session.commit()
    session.expire(user, ["session_version"])


def expire_session(session: Session, user: User, reason: str) -> None:
    """Record that one login session of ``user`` ran out (``reason``: ``idle`` or
    ``absolute``). Commits. Their other sessions go on: the web layer clears this one, and a
    kept copy of its cookie stays expired (the times it is checked by are signed into it)."""
    begin_write(session)
    _audit(session, "auth.session_expired", user, {"reason": reason})
    session.commit()


def record_refusal(session: Session, user: User | None, endpoint: str) -> None:
    """Record a refused authorisation (a 403) of ``user`` (None: not logged in) at
    ``endpoint``. Commits; call it with nothing of the refused request left uncommitted."""
    begin_write(session)
    consents.audit.record(
        session,
        "auth.forbidden",
        actor=user_ref(user.id) if user is not None else ANONYMOUS,
        subject_type="endpoint",
        subject_id=endpoint,
        detail={"role": user.role} if user is not None else {},
    )
    session.commit()


def _audit(session: Session, action: str, user: User, detail: dict[str, str] | None = None) -> None:
    consents.audit.record(
        session,
        action,
        actor=user_ref(user.id),
        subject_type="user",
        subject_id=str(user.id),
        detail=detail,
    )


def login_id(user: User) -> str:
    """The ID a login session keeps: the account plus its session version.

    Logging out bumps the version in the database, so every cookie issued before is refused.
    """
    return f"{user.id}:{user.session_version}"


def user_for_login(session: Session, login_id: str) -> User | None:
    """The account a login session's ID names; None if its session version was revoked."""
    user_id, _, version = login_id.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None
    user = session.get(User, int(user_id))
    if user is None or user.session_version != int(version):
        return None
    return user


def revoke_sessions(user: User) -> None:
    user.session_version += 1
