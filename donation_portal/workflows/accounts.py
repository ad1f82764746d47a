"""Accounts: argon2id password hashes, roles, and server-side revocable sessions."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import ROLES, User

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
    """The user if the password matches; rehashes when argon2's parameters have changed."""
    user = find_user(session, email)
    if user is None:
        _hasher.hash(password)  # spend the same time, so timing does not reveal accounts
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


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
