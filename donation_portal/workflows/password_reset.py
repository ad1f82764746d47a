"""Resetting a forgotten password through a link sent by e-mail.

The link's token holds 256 random bits (``secrets``); only its SHA-256 is stored, so a copy
of the database opens no account, and a fast hash suffices (nobody can guess the token back
from it). A token works once and for ``VALID_FOR``; asking again replaces the older one.
Resetting ends every login session and revokes the API tokens of the account, and logs
nobody in: the user then logs in as always, with every check login makes (a second factor
included). A disabled account gets no link. The token is never logged nor audited.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from consent.canonical import as_utc
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import PasswordReset, User
from donation_portal.workflows import accounts

VALID_FOR = timedelta(minutes=30)
TOKEN_BYTES = 32
INVALID_LINK = (
    "This link does not work any more: each link works once, for 30 minutes. "
    "Please ask for a new one below."
)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def request(session: Session, email: str, now: datetime) -> tuple[User, str] | None:
    """A new reset token for the account of ``email`` and that account; None if there is
    no such account, or it is disabled (the caller answers the same either way). Audited.
    Commits."""
    user = accounts.find_user(session, email)
    if user is None or user.disabled_at is not None:
        return None
    begin_write(session)
    session.execute(delete(PasswordReset).where(PasswordReset.user_id == user.id))
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(
        PasswordReset(
            user_id=user.id, token_hash=_digest(token), created_at=now, expires_at=now + VALID_FOR
        )
    )
    accounts.audit(session, "auth.password_reset_requested", user)
    session.commit()
    return user, token


def complete(session: Session, token: str, password: str, now: datetime) -> User:
    """Set the password of the account ``token`` was sent for, used up the token, and end
    the account's sessions and API tokens. Audited. Commits; AccountError (nothing changed)
    if the token is unknown, used or expired, or the password is refused."""
    found = session.execute(
        select(PasswordReset, User)
        .join(User, User.id == PasswordReset.user_id)
        .where(PasswordReset.token_hash == _digest(token))
    ).first()
    if found is None:
        raise accounts.AccountError(INVALID_LINK)
    reset, user = found
    if as_utc(reset.expires_at) <= now or user.disabled_at is not None:
        raise accounts.AccountError(INVALID_LINK)
    accounts.check_password(password, user.email)
    new_hash = accounts.hash_password(password)  # slow: before the write lock
    begin_write(session)
    deleted = session.execute(
        delete(PasswordReset)
        .where(PasswordReset.id == reset.id)
        .execution_options(synchronize_session=False)
    )
    if not deleted.rowcount:  # type: ignore[attr-defined]
        raise accounts.AccountError(INVALID_LINK)  # used meanwhile, by a request in parallel
    session.execute(delete(PasswordReset).where(PasswordReset.user_id == user.id))
    ended = accounts.set_password_hash(session, user, new_hash, now)
    accounts.audit(session, "auth.password_reset", user, ended)
    session.commit()
    return user
