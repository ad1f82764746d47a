"""Accounts: argon2id password hashes, password rules, roles, disabling by admins.

``create_user``, ``find_user`` and ``authenticate`` are services that only flush (the CLI
and setup scripts commit around them); ``log_in``, ``log_out``, ``expire_session``,
``change_password``, ``set_disabled`` and ``record_refusal`` are the web use cases, each one
unit of work that commits. Login sessions: ``login_sessions``; registering: ``registration``.

Passwords follow OWASP ASVS (2.1): at least 8 characters (15 recommended), up to 128, any
characters, no composition rules, and none that is common or easily guessed: zxcvbn must
estimate it needs 10^8 guesses or more, the account's e-mail address counting as known.

Each authentication event is audited (``auth.*``) under an opaque reference, never an e-mail
address or a password: the account's ``user:<id>``, or for a login attempt naming no account a
keyed hash of the address (``login_pseudonym``), so repeated guesses at one address show as one
actor without the trail holding the address.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from zxcvbn import zxcvbn

import consent as consents
from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import ROLES, ApiToken, User, user_ref
from donation_portal.workflows import login_sessions

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
MIN_PASSWORD_LENGTH = 8
RECOMMENDED_PASSWORD_LENGTH = 15
MAX_PASSWORD_LENGTH = 128
_MIN_GUESSES = 10**8  # zxcvbn's estimate; any 8 random characters reach it
_STRENGTH_CHECKED = 72  # zxcvbn's own limit; a password that long is long enough anyway
# words anyone guessing at this portal's accounts tries first
_PORTAL_WORDS = ("donation", "donor", "portal", "medical", "image", "spende", "datenspende")
USERS_PAGE_SIZE = 50
ANONYMOUS = "anonymous"  # the audit actor of a request that no login session or account names
_PSEUDONYM_LABEL = b"donation-portal login e-mail\x00"  # keeps these hashes apart from other uses
UNCONFIRMED = (
    "Please confirm your e-mail address first, with the link we sent you when you "
    "registered. No e-mail, or the link expired? Register again with the same address "
    "for a new link."
)


class AccountError(Exception):
    """An account operation was refused; the message is safe to show."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


def password_problem(password: str, email: str = "") -> str | None:
    """Why ``password`` must not be used (a sentence for the person choosing it), or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"Your password is too short. Please use at least {MIN_PASSWORD_LENGTH} "
            f"characters; {RECOMMENDED_PASSWORD_LENGTH} or more are better."
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Your password is too long. Please use at most {MAX_PASSWORD_LENGTH} characters."
    address = email.lower()
    parts = [part for part in re.split(r"[@._+-]", address) if part]
    hints = [*_PORTAL_WORDS, address, address.partition("@")[0], *parts]
    if zxcvbn(password[:_STRENGTH_CHECKED], user_inputs=hints)["guesses"] < _MIN_GUESSES:
        return (
            "This password is too easy to guess: it is a common password, or close to one, "
            "or contains your e-mail address. Tip: a few unrelated words, like a short "
            "sentence only you would think of, are easy to remember and hard to guess."
        )
    return None


def check_password(password: str, email: str = "") -> None:
    """AccountError if ``password`` must not be used (``password_problem``)."""
    problem = password_problem(password, email)
    if problem is not None:
        raise AccountError(problem)


def create_user(session: Session, email: str, password: str, role: str) -> User:
    """An account whose address counts as confirmed: whoever creates it here (the CLI, an
    admin's setup) vouches for it. Donors register themselves: ``registration``."""
    if role not in ROLES:
        raise AccountError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    email = normalise_email(email)
    check_password(password, email)
    if find_user(session, email) is not None:
        raise AccountError("An account with this e-mail address already exists.")
    user = User(
        email=email, password_hash=_hasher.hash(password), role=role, email_confirmed_at=utcnow()
    )
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


def log_in(session: Session, email: str, password: str, *, pseudonym_key: bytes) -> User | None:
    """Check the password; on success record the login (audited) and rehash the password
    if argon2's parameters have changed. Commits; None if it is wrong, with only the failed
    attempt recorded (``pseudonym_key`` names an address that has no account). AccountError
    if the password is right but the address not yet confirmed: telling so reveals nothing
    to whoever does not know the password."""
    user = authenticate(session, email, password)  # slow on purpose: not under a write lock
    if user is None or user.disabled_at is not None:
        _record_failed_login(session, email, pseudonym_key)
        return None
    if user.email_confirmed_at is None:
        _record_failed_login(session, email, pseudonym_key, "unconfirmed")
        raise AccountError(UNCONFIRMED)
    new_hash = _hasher.hash(password) if _hasher.check_needs_rehash(user.password_hash) else None
    begin_write(session)
    user = session.get(User, user.id)
    if user is None:  # deleted meanwhile
        return None
    if new_hash is not None:
        user.password_hash = new_hash
    audit(session, "auth.login", user, {"role": user.role})
    session.commit()
    return user


def login_pseudonym(key: bytes, email: str) -> str:
    """The audit's name for an e-mail address: stable across attempts (whatever its case or
    spacing), and unreadable without ``key`` (a plain hash of an address is easily reversed
    by hashing candidate addresses)."""
    message = _PSEUDONYM_LABEL + normalise_email(email).encode("utf-8")
    return "email-hmac:" + hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def _record_failed_login(
    session: Session, email: str, pseudonym_key: bytes, reason: str = "password"
) -> None:
    begin_write(session)
    user = find_user(session, email)
    if user is not None:
        reason = "disabled" if user.disabled_at is not None else reason
        audit(session, "auth.login_failed", user, {"reason": reason})
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


def log_out(session: Session, user: User, login_session_id: int) -> None:
    """End this login session of ``user`` (its cookie stops working). Commits."""
    begin_write(session)
    login_sessions.drop(session, user, login_session_id)
    audit(session, "auth.logout", user)
    session.commit()


def expire_session(session: Session, user: User, login_session_id: int, reason: str) -> None:
    """End one login session of ``user`` that ran out (``reason``: ``idle`` or
    ``absolute``), and record it. Commits. Their other sessions go on: the web layer clears
    this one's cookie, and a kept copy of it stays expired (its row is gone)."""
    begin_write(session)
    login_sessions.drop(session, user, login_session_id)
    audit(session, "auth.session_expired", user, {"reason": reason})
    session.commit()


def change_password(
    session: Session, user: User, current: str, new: str, login_session_id: int, now: datetime
) -> None:
    """``user`` replaces their password, proving the current one: their other login
    sessions end, and their API tokens are revoked (whoever learnt the old password may
    hold either). Audited. Commits; AccountError (nothing changed) if refused."""
    if authenticate(session, user.email, current) is None:
        raise AccountError("Your current password is not correct.")
    if new == current:
        raise AccountError("Please choose a new password that differs from your current one.")
    check_password(new, user.email)
    new_hash = hash_password(new)  # slow: before the write lock
    begin_write(session)
    user.password_hash = new_hash
    ended = login_sessions.end_all(session, user, keep_id=login_session_id)
    revoked = revoke_api_tokens(session, user, user, now)
    detail: dict[str, str | int] = {"sessions_ended": ended, "tokens_revoked": revoked}
    audit(session, "auth.password_changed", user, detail)
    session.commit()


def hash_password(password: str) -> str:
    """The argon2id hash to store for ``password`` (slow on purpose: hash it before taking
    the write lock)."""
    return _hasher.hash(password)


def set_password_hash(
    session: Session, user: User, password_hash: str, now: datetime
) -> dict[str, str | int]:
    """Store ``user``'s new password hash and end all their sessions and API tokens; what
    was ended, for the audit. Flushes only: a step of the reset by e-mail."""
    user.password_hash = password_hash
    ended = login_sessions.end_all(session, user)
    revoked = revoke_api_tokens(session, user, user, now)
    return {"sessions_ended": ended, "tokens_revoked": revoked}


def revoke_api_tokens(session: Session, owner: User, actor: User, now: datetime) -> int:
    """Revoke every API token of ``owner`` the API still takes, as ``actor``; how many.
    Flushes only: the caller audits it as part of its own event."""
    result = session.execute(
        update(ApiToken)
        .where(
            ApiToken.user_id == owner.id,
            ApiToken.revoked_at.is_(None),
            ApiToken.expires_at > now,
        )
        .values(revoked_at=now, revoked_by=actor.id)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def users_page(session: Session, page: int) -> tuple[list[User], int, int]:
    """Page ``page`` (from 1; past the last: the last) of every account, oldest first, with
    the page's number and how many pages there are."""
    total = session.scalar(select(func.count()).select_from(User)) or 0
    pages = max(1, -(-total // USERS_PAGE_SIZE))
    page = min(max(page, 1), pages)
    query = select(User).order_by(User.id).offset((page - 1) * USERS_PAGE_SIZE)
    return list(session.scalars(query.limit(USERS_PAGE_SIZE))), page, pages


def set_disabled(
    session: Session, admin: User, user_id: int, disabled: bool, now: datetime
) -> User:
    """An admin disables (or re-enables) an account. A disabled account cannot log in, and
    disabling ends its sessions and revokes its API tokens (re-enabling restores neither).
    Audited. Commits; AccountError if there is no such account, or it is the admin's own."""
    begin_write(session)
    user = session.get(User, user_id)
    if user is None:
        raise AccountError("There is no such account.")
    if user.id == admin.id:
        raise AccountError("You cannot disable your own account.")
    if disabled and user.disabled_at is None:
        user.disabled_at = now
        ended = login_sessions.end_all(session, user)
        revoked = revoke_api_tokens(session, user, admin, now)
        detail: dict[str, str | int] = {"sessions_ended": ended, "tokens_revoked": revoked}
        audit(session, "auth.account_disabled", user, detail, actor=admin)
    elif not disabled and user.disabled_at is not None:
        user.disabled_at = None
        audit(session, "auth.account_enabled", user, actor=admin)
    session.commit()
    return user


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


def audit(
    session: Session,
    action: str,
    user: User,
    detail: dict[str, str | int] | None = None,
    *,
    actor: User | None = None,
) -> None:
    """Record ``action`` on ``user``'s account, done by ``actor`` (default: the user)."""
    consents.audit.record(
        session,
        action,
        actor=user_ref((actor or user).id),
        subject_type="user",
        subject_id=str(user.id),
        detail=detail,
    )
