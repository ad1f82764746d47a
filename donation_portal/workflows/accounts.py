"""Accounts: argon2id password hashes, roles, and server-side revocable sessions.

``create_user``, ``find_user`` and ``authenticate`` are services that only flush (the CLI
and setup scripts commit around them); ``register``, ``log_in`` and ``log_out`` are the web
use cases, each one unit of work that commits.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import ROLES, User, user_ref

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
MIN_PASSWORD_LENGTH = 10


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
    session.commit()
    return user


def log_in(session: Session, email: str, password: str) -> User | None:
    """Check the password; on success record the login (audited) and rehash the password
    if argon2's parameters have changed. Commits; None (nothing stored) if it is wrong."""
    user = authenticate(session, email, password)  # slow on purpose: not under a write lock
    if user is None:
        return None
    new_hash = _hasher.hash(password) if _hasher.check_needs_rehash(user.password_hash) else None
    begin_write(session)
    user = session.get(User, user.id)
    if user is None:  # deleted meanwhile
        return None
    if new_hash is not None:
        user.password_hash = new_hash
    consents.audit.record(
        session,
        "auth.login",
        actor=user_ref(user.id),
        subject_type="user",
        subject_id=str(user.id),
        detail={"role": user.role},
    )
    session.commit()
    return user


def log_out(session: Session, user: User) -> None:
    """End every login session of ``user`` (their cookies stop working). Commits."""
    begin_write(session)
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(session_version=User.session_version + 1)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.expire(user, ["session_version"])


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
