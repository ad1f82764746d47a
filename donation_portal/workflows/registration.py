"""Registering a donor account, confirmed through a link sent by e-mail.

Registering never tells whether an address has an account: the page answers the same, and
only the owner of the address learns it, by e-mail. A new address gets an unconfirmed
account (it cannot log in) and a link to confirm it; an address with an account gets a
note to its owner instead; an unconfirmed one gets a new link and takes the new password
(whoever registered first is not trusted: they may not own the address). A disabled
account gets nothing.

Confirming asks for the password as well as the link: the link proves the address, the
password that it is the person who registered. So someone who registers another person's
address, and that person opening the link unasked, never yields an account whose password
the first one knows. The token holds 256 random bits (``secrets``); only its SHA-256 is
stored (on the account), works once and for ``VALID_FOR``. The address is never audited,
nor the token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import consent as consents
from consent.canonical import as_utc
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import User
from donation_portal.workflows import accounts

VALID_FOR = timedelta(hours=24)
TOKEN_BYTES = 32
INVALID_LINK = (
    "This link does not work any more: each link works once, for 24 hours. "
    "Please register again with the same address for a new one."
)


@dataclass(frozen=True)
class Registered:
    """Whom to e-mail what: ``token`` for a link that confirms ``user``'s address, or None
    for a note that the address already has an account. ``user`` None: e-mail nobody."""

    user: User | None
    token: str | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def register(session: Session, email: str, password: str, now: datetime) -> Registered:
    """Someone registers ``email``. Audited under the account, never the address. Commits;
    AccountError (nothing stored) if the password is refused, which depends on the password
    and the address only: the answer must not depend on whether it has an account."""
    email = accounts.normalise_email(email)
    accounts.check_password(password, email)
    password_hash = accounts.hash_password(password)  # either way, so timing tells nothing
    begin_write(session)
    user = accounts.find_user(session, email)
    if user is not None and (user.email_confirmed_at is not None or user.disabled_at is not None):
        consents.audit.record(
            session,
            "auth.register_existing",
            actor=accounts.ANONYMOUS,
            subject_type="user",
            subject_id=str(user.id),
        )
        session.commit()
        return Registered(user if user.disabled_at is None else None)
    resent = user is not None
    if user is None:
        user = User(email=email, role="donor")
        session.add(user)
    user.password_hash = password_hash
    token = secrets.token_urlsafe(TOKEN_BYTES)
    user.confirmation_hash = _digest(token)
    user.confirmation_expires_at = now + VALID_FOR
    try:
        session.flush()
    except IntegrityError:  # registered meanwhile, by a request in parallel: it sends the mail
        session.rollback()
        return Registered(None)
    accounts.audit(session, "auth.register", user, {"role": user.role, "resent": int(resent)})
    session.commit()
    return Registered(user, token)


def confirm(session: Session, token: str, password: str, now: datetime) -> User:
    """Confirm the address of the account ``token`` was sent for, if ``password`` is its
    password; the token is used up. Audited. Commits; AccountError (nothing changed) if the
    token is unknown, used or expired, or the password is wrong."""
    user = session.scalars(select(User).where(User.confirmation_hash == _digest(token))).first()
    expires = user.confirmation_expires_at if user is not None else None
    if user is None or expires is None or as_utc(expires) <= now or user.disabled_at is not None:
        raise accounts.AccountError(INVALID_LINK)
    if accounts.authenticate(session, user.email, password) is None:
        raise accounts.AccountError(
            "This is not the password you chose when registering. If you forgot it, please "
            "register again with the same address: you will get a new link."
        )
    begin_write(session)
    confirmed = session.execute(
        update(User)
        .where(User.id == user.id, User.confirmation_hash == _digest(token))
        .values(email_confirmed_at=now, confirmation_hash=None, confirmation_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if not confirmed.rowcount:  # type: ignore[attr-defined]
        raise accounts.AccountError(INVALID_LINK)  # used meanwhile, by a request in parallel
    accounts.audit(session, "auth.email_confirmed", user)
    session.commit()
    session.refresh(user)
    return user
